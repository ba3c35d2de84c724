# cython: language_level=3
"""Reception statistics and RTCP reports for one RTP stream (declarations)."""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    MAX_CNAME = 64
    RTCP_MAX = 256  # bytes of the largest compound packet built (SR + 1 block + SDES + BYE)


cdef class Rtcp:
    # RFC 3550 A.1 (sequence), A.3 (loss), A.8 (jitter)
    cdef public bint seq_init
    cdef public uint32_t remote_ssrc
    cdef uint16_t max_seq
    cdef uint32_t cycles, base_seq, received_prior, expected_prior
    cdef public uint64_t received, received_octets, rtcp_received
    cdef public double jitter  # timestamp units
    cdef double last_transit
    cdef bint have_transit
    # the peer's last SR, for LSR/DLSR
    cdef public uint32_t lsr
    cdef public int64_t lsr_arrival_ns
    cdef uint8_t cname[MAX_CNAME]
    cdef int cname_len

    cdef void count_c(self, uint32_t ssrc, uint16_t seq, uint32_t ts, int length,
                      int64_t arrival_ns) noexcept nogil
    cdef int receive_c(self, const uint8_t *pkt, int n, int64_t now_ns) noexcept nogil
    cdef int build_c(self, uint8_t *pkt, uint32_t ssrc, uint32_t rtp_ts, uint64_t sent,
                     uint64_t sent_octets, int64_t now_ns, int64_t wall_ns,
                     bint bye) noexcept nogil
    cdef int64_t lost_c(self) noexcept nogil
