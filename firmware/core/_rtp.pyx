# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""RTP fixed header (RFC 3550 §5.1): validation and parsing, packing, with Python faces.

Owns the header format only: version, padding, CSRC list and extension checks with a reason
code per refusal (``RTP_ERRORS``). Knows nothing about payloads, timing, statistics or sockets.
"""

from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize


cdef int rtp_parse_c(const uint8_t *d, int n, RtpHeader *h) noexcept nogil:
    """0 or a negative reason code (see RTP_ERRORS)."""
    cdef int end = n
    cdef int pad, off, words
    if n < 12:
        return -1
    if (d[0] >> 6) != 2:
        return -2
    if d[0] & 0x20:
        pad = d[n - 1]
        if pad == 0 or pad > n - 12:
            return -3
        end -= pad
    off = 12 + 4 * (d[0] & 0x0F)
    if off > end:
        return -4
    if d[0] & 0x10:
        if off + 4 > end:
            return -5
        words = rd16(d + off + 2)
        off += 4 + 4 * words
        if off > end:
            return -6
    h.pt = d[1] & 0x7F
    h.marker = (d[1] >> 7) & 1
    h.seq = rd16(d + 2)
    h.ts = rd32(d + 4)
    h.ssrc = rd32(d + 8)
    h.offset = off
    h.length = end - off
    return 0


RTP_ERRORS = {-1: "shorter than an RTP header", -2: "RTP version is not 2",
              -3: "bad RTP padding", -4: "CSRC list longer than the packet",
              -5: "truncated header extension", -6: "header extension longer than the packet"}


def rtp_pack(int payload_type, bint marker, int sequence, unsigned int timestamp,
             unsigned int ssrc, payload) -> bytes:
    cdef const uint8_t[::1] mv = payload
    cdef Py_ssize_t n = mv.shape[0]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 12 + n)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    rtp_header_c(p, payload_type, marker, <uint16_t>(sequence & 0xFFFF), timestamp, ssrc)
    if n:
        memcpy(p + 12, &mv[0], n)
    return out


def rtp_parse(data) -> tuple:
    """(payload_type, marker, sequence, timestamp, ssrc, payload); ValueError if invalid."""
    cdef const uint8_t[::1] mv = data
    cdef RtpHeader h
    cdef int n = mv.shape[0]
    cdef int rc = rtp_parse_c(&mv[0], n, &h) if n else -1
    if rc:
        raise ValueError(RTP_ERRORS[rc])
    return (h.pt, bool(h.marker), h.seq, h.ts, h.ssrc, bytes(mv[h.offset:h.offset + h.length]))
