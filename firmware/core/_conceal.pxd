# cython: language_level=3
"""Packet-loss concealment on the playback side (declarations)."""

from libc.stdint cimport int16_t

cdef enum:
    CONCEAL_MAX = 320  # samples: 40 ms at 8 kHz


cdef class Concealer:
    cdef int16_t last[CONCEAL_MAX]
    cdef int run
    cdef bint have_last

    cdef void good_c(self, int16_t *pcm, int n) noexcept nogil
    cdef void conceal_c(self, int16_t *pcm, int n) noexcept nogil
    cdef void conceal_towards_c(self, int16_t *pcm, int n, const int16_t *future,
                                int gap) noexcept nogil
