# cython: language_level=3
"""RTP header pack/parse and big-endian field helpers (declarations)."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef struct RtpHeader:
    int pt
    int marker
    uint16_t seq
    uint32_t ts
    uint32_t ssrc
    int offset
    int length


cdef inline uint16_t rd16(const uint8_t *p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline uint32_t rd32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void wr16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF


cdef inline void wr32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline void rtp_header_c(uint8_t *p, int pt, int marker, uint16_t seq, uint32_t ts,
                              uint32_t ssrc) noexcept nogil:
    p[0] = 0x80
    p[1] = (0x80 if marker else 0) | (pt & 0x7F)
    wr16(p + 2, seq)
    wr32(p + 4, ts)
    wr32(p + 8, ssrc)


cdef int rtp_parse_c(const uint8_t *d, int n, RtpHeader *h) noexcept nogil
