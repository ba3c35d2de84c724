# cython: language_level=3
"""Sound-card clock drift: measured from the FIFO fill trends, absorbed by resampling (declarations)."""

from libc.stdint cimport int16_t, int64_t, uint64_t

cdef enum:
    RS_BUF = 1024  # input samples a resampler may hold (a few frames)


cdef class Resampler:
    cdef int16_t buf[RS_BUF]
    cdef int count
    cdef double pos

    cdef void reset_c(self) noexcept nogil
    cdef int push_c(self, const int16_t *x, int n) noexcept nogil
    cdef int produce_c(self, int16_t *out, int max_out, double step) noexcept nogil
    cdef int needed_c(self, int n_out, double step) noexcept nogil


cdef class FillControl:
    cdef int block_ticks, ticks, blocks, warmup
    cdef int max_level
    cdef double level_sum, target, integ, u, drift, ema
    cdef bint have_target
    cdef public double kp, ki, limit, floor

    cdef double tick_c(self, double level) noexcept nogil


cdef class DriftCompensator:
    cdef readonly int frame_samples
    cdef readonly Resampler play_rs, cap_rs
    cdef readonly FillControl play_ctl, cap_ctl
    cdef readonly bint play_on, cap_on
    cdef bint cap_started
    cdef double cap_step

    cdef int playback_c(self, const int16_t *frame, int16_t *out, int level,
                        int64_t since_ns) noexcept nogil
    cdef int capture_need_c(self, int level, int64_t since_ns) noexcept nogil
    cdef int capture_c(self, int16_t *frame, int16_t *raw, int got) noexcept nogil
    cdef bint blocks_settled(self, FillControl c) noexcept nogil


cdef class ClockSlip:
    cdef readonly int frame_samples
    cdef readonly int64_t ticks, slips  # slips: + held, - dropped (asked for)
    cdef readonly int64_t samples  # read from the card
    cdef int64_t start_ns, anchor_ns, anchor_samples
    cdef readonly int64_t last_ns

    cdef int tick_c(self, int64_t now_ns, int samples) noexcept nogil
