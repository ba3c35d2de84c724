# cython: language_level=3
"""Packet-loss concealment for the playout path (declarations; see _plc.pyx)."""

from libc.stdint cimport int16_t, uint64_t
from firmware.core._conceal cimport Concealer

cdef enum:
    PLC_HIST = 480          # samples of history kept (60 ms at 8 kHz)
    PLC_PITCH_MIN = 40      # 200 Hz
    PLC_PITCH_MAX = 120     # 66.7 Hz
    PLC_CORR_LEN = 160      # correlation window for the pitch search (20 ms)
    PLC_PBUF = 3 * PLC_PITCH_MAX
    PLC_PLAN = 480          # the longest gap bridged towards a frame already here (60 ms)


cdef class PitchConcealer(Concealer):
    cdef int16_t hist[PLC_HIST]      # the last samples played, oldest first
    cdef float base[PLC_HIST]        # the history as it was when the current loss began
    cdef float pbuf[PLC_PBUF]        # the periods being repeated, offset-corrected at the start
    cdef float old_pbuf[PLC_PBUF]    # the previous period buffer while crossfading to more periods
    cdef int pitch, ola, pos, plen, old_pos, old_plen, fade_left, erased, offset_left
    cdef float offset
    cdef float plan[PLC_PLAN]        # a gap bridged from the past to a known future frame
    cdef float carry[PLC_PITCH_MAX]  # an abandoned plan's continuation, faded out over P/4
    cdef float expect[PLC_PITCH_MAX] # the start of the future frame a plan leads into
    cdef int plan_len, plan_pos, carry_len, carry_pos, expect_len
    cdef public uint64_t good_frames, concealed_frames, merges, bridged_frames
    cdef void good_c(self, int16_t *pcm, int n) noexcept nogil
    cdef void conceal_c(self, int16_t *pcm, int n) noexcept nogil
    cdef void conceal_towards_c(self, int16_t *pcm, int n, const int16_t *future,
                                int gap) noexcept nogil
    cdef void _start_loss(self) noexcept nogil
    cdef float _forward(self) noexcept nogil
    cdef int _future_pitch(self, const int16_t *fut, int n) noexcept nogil
    cdef void _plan(self, const int16_t *fut, int n, int total) noexcept nogil
    cdef void _drop_plan(self) noexcept nogil
    cdef float _from_carry(self, float v) noexcept nogil
    cdef void _push_hist(self, const int16_t *pcm, int n) noexcept nogil
    cdef int _find_pitch(self) noexcept nogil
    cdef void _build(self, float *buf, int periods) noexcept nogil
    cdef float _next(self) noexcept nogil
