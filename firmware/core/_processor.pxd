# cython: language_level=3
"""The capture-processor hook around the media core's PCM (declarations)."""

from libc.stdint cimport int16_t


cdef class CaptureProcessor:
    cdef void playback_c(self, const int16_t *pcm, int n, int queued) noexcept nogil
    cdef void capture_c(self, int16_t *pcm, int n, int queued) noexcept nogil
