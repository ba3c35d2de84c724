# cython: language_level=3
"""A test double for the capture processor (not for the loop under test): it hands each frame
to a real processor (the speex canceller) and then, on every ``every``-th captured frame, burns
``burn_ms`` of wall-clock time, as a slower board's canceller would; after ``burn_frames``
frames (-1: never) it stops burning. Compiled by the test that
uses it (``tests/integration/test_wire_timing.py``); never part of the firmware."""

from libc.stdint cimport int16_t, int64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from firmware.core._processor cimport CaptureProcessor


cdef inline int64_t _mono_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef class SlowProcessor(CaptureProcessor):
    cdef CaptureProcessor inner
    cdef int64_t burn_ns
    cdef int every
    cdef long long burn_frames
    cdef public long long frames, burned

    def __init__(self, CaptureProcessor inner, double burn_ms, int every=1,
                 long long burn_frames=-1):
        self.inner = inner
        self.burn_ns = <int64_t>(burn_ms * 1e6)
        self.every = every if every > 0 else 1
        self.burn_frames = burn_frames

    cdef void playback_c(self, const int16_t *pcm, int n, int queued) noexcept nogil:
        self.inner.playback_c(pcm, n, queued)

    cdef void capture_c(self, int16_t *pcm, int n, int queued) noexcept nogil:
        cdef int64_t until
        self.inner.capture_c(pcm, n, queued)
        if self.frames % self.every == 0 and (self.burn_frames < 0
                                               or self.frames < self.burn_frames):
            until = _mono_ns() + self.burn_ns
            while _mono_ns() < until:
                pass
            self.burned += 1
        self.frames += 1
