# cython: language_level=3
"""G.711 mu-law and A-law (declarations): frame encode/decode for the media core."""

from libc.stdint cimport int16_t, uint8_t

cdef void encode_c(const int16_t *pcm, uint8_t *out, int n, int law) noexcept nogil
cdef void decode_c(const uint8_t *data, int16_t *out, int n, int law) noexcept nogil
cdef bint ulaw_quiet_c(const uint8_t *data, int n) noexcept nogil
cdef bint alaw_quiet_c(const uint8_t *data, int n) noexcept nogil

cdef enum:
    QUIET_PEAK = 1024  # a frame whose samples all stay under this (-30 dBFS) is a pause
