# cython: language_level=3
"""The adaptive jitter buffer (declarations)."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    JB_SLOTS = 64
    DRAIN_FAR = 3    # frames over target+1 that count as a backlog to drain fast
    DRAIN_FAST = 5   # periods such a backlog must last before a frame is skipped
    DRAIN_SLOW = 50  # periods a smaller excess must last (1 s at 20 ms)
    START_PERIODS = 50  # a stream's first second: a backlog over target+1 is stale, goes at once
    SLACK_PERIODS = 100  # a clean path with a frame in hand this long (2 s) sheds one ...
    QUIET_WAIT = 250     # ... at a pause (quiet frame) if one comes within 5 s more (so does a
                         # slow drain) frame
    MAX_FRAME = 320  # bytes: 40 ms of G.711

ctypedef bint (*quiet_fn)(const uint8_t *data, int length) noexcept nogil

cdef struct Slot:
    int used
    uint32_t ts
    uint16_t seq
    int length
    uint8_t data[MAX_FRAME]


cdef class JitterBuffer:
    cdef Slot slots[JB_SLOTS]
    cdef public int frame_samples, target, min_frames, max_frames
    cdef public bint started, clean  # clean: no packet late or missing yet
    cdef uint32_t play_ts, ssrc, first_ts
    cdef uint16_t highest_seq
    cdef int deep_ticks, slack_ticks, pops  # pops: periods since the stream started (capped)
    cdef uint64_t used_mask  # bit i: slots[i].used
    cdef quiet_fn quiet  # NULL: any frame may be shed; else only one it calls quiet
    cdef public uint64_t late, duplicates, reordered, resyncs, too_early, shrinks, grows
    # clock slips the owner asked for (+: hold the playout a period, -: drop a frame), done
    # one at a time at a pause; and those done
    cdef public int slip_pending, slip_wait
    cdef public uint64_t slips_held, slips_dropped

    cdef void reset_c(self) noexcept nogil
    cdef int put_c(self, uint32_t ts, uint16_t seq, uint32_t ssrc, const uint8_t *data,
                   int length) noexcept nogil
    cdef int pop_c(self, uint8_t *out) noexcept nogil
    cdef int depth_c(self) noexcept nogil
    cdef int peek_c(self, uint8_t *out, int ahead) noexcept nogil
    cdef void _skip_c(self) noexcept nogil
    cdef void _unclean_c(self) noexcept nogil
    cdef bint _may_shed_c(self, int waited) noexcept nogil
    cdef int _slip_c(self, uint8_t *out) noexcept nogil
