# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Reception statistics (RFC 3550 A.1, A.3, A.8) and the RTCP compound packets of one stream.

Owns what the stream knows about its peer's packets — extended highest sequence number,
cumulative and interval loss, interarrival jitter from arrival times, the peer's last SR — and
the reports built from it: SR with one report block, SDES CNAME, BYE. Time is passed in
(``now_ns`` monotonic, ``wall_ns`` for the NTP timestamp, ``arrival_ns`` per packet), so a
test drives it with a virtual clock; ``firmware.media._reference.Rtcp`` is its twin. Knows
nothing about sockets, codecs, the jitter buffer or the packet transform.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from firmware.core._rtp cimport rd32, wr16, wr32
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize


cdef class Rtcp:
    """The receive side's RFC 3550 state and the SR/SDES/BYE writer."""

    def __init__(self, str cname="intercom"):
        raw = cname.encode()[:MAX_CNAME]
        self.cname_len = len(raw)
        memcpy(self.cname, <const char *>raw, self.cname_len)

    cdef void count_c(self, uint32_t ssrc, uint16_t seq, uint32_t ts, int length,
                      int64_t arrival_ns) noexcept nogil:
        """One RTP packet from the peer (any payload type), arrival on the wall clock."""
        cdef double arrival, transit, d
        cdef uint16_t udelta
        self.received += 1
        self.received_octets += length
        if not self.seq_init or ssrc != self.remote_ssrc:
            self.seq_init = True
            self.remote_ssrc = ssrc
            self.base_seq = seq
            self.max_seq = seq
            self.cycles = 0
            self.have_transit = False
            self.received = 1
        else:
            udelta = seq - self.max_seq
            if udelta < 3000:
                if seq < self.max_seq:
                    self.cycles += 65536
                self.max_seq = seq
        arrival = arrival_ns * 8e-6  # in 8 kHz timestamp units
        transit = arrival - ts
        if self.have_transit:
            d = transit - self.last_transit
            if d < 0:
                d = -d
            self.jitter += (d - self.jitter) / 16.0
        self.last_transit = transit
        self.have_transit = True

    cdef int receive_c(self, const uint8_t *pkt, int n, int64_t now_ns) noexcept nogil:
        """An RTCP packet from the peer: 0 counted (an SR's time kept), -1 malformed."""
        if n >= 8 and (pkt[0] >> 6) == 2 and pkt[1] >= 200 and pkt[1] <= 204:
            self.rtcp_received += 1
            if pkt[1] == 200 and n >= 20:
                self.lsr = rd32(pkt + 10)
                self.lsr_arrival_ns = now_ns
            return 0
        return -1

    cdef int64_t lost_c(self) noexcept nogil:
        """Cumulative packets lost (RFC 3550 A.3; negative with duplicates)."""
        cdef uint32_t ext_max = self.cycles + self.max_seq
        if not self.seq_init:
            return 0
        return (<int64_t>ext_max - self.base_seq + 1) - <int64_t>self.received

    cdef int build_c(self, uint8_t *pkt, uint32_t ssrc, uint32_t rtp_ts, uint64_t sent,
                     uint64_t sent_octets, int64_t now_ns, int64_t wall_ns,
                     bint bye) noexcept nogil:
        """SR (+ a report block once the peer was heard), SDES CNAME, optional BYE: length.

        ``pkt`` holds RTCP_MAX bytes. Building a report starts a new loss interval.
        """
        cdef int off = 0, rb, words, clen, i
        cdef uint64_t ntp
        cdef uint32_t ext_max, expected, expected_interval, received_interval, lost_interval
        cdef int32_t lost
        cdef uint8_t fraction = 0
        cdef uint32_t dlsr = 0
        cdef int64_t wall_s = wall_ns // 1000000000, wall_frac = wall_ns % 1000000000
        ntp = ((<uint64_t>wall_s + 2208988800ULL) << 32) | \
            ((<uint64_t>wall_frac << 32) // 1000000000ULL)
        rb = 1 if self.seq_init else 0
        pkt[0] = 0x80 | rb
        pkt[1] = 200  # SR
        wr16(pkt + 2, <uint16_t>(6 + 6 * rb))
        wr32(pkt + 4, ssrc)
        wr32(pkt + 8, <uint32_t>(ntp >> 32))
        wr32(pkt + 12, <uint32_t>ntp)
        wr32(pkt + 16, rtp_ts)
        wr32(pkt + 20, <uint32_t>sent)
        wr32(pkt + 24, <uint32_t>sent_octets)
        off = 28
        if rb:
            ext_max = self.cycles + self.max_seq
            expected = ext_max - self.base_seq + 1
            lost = <int32_t>(expected - <uint32_t>self.received)
            expected_interval = expected - self.expected_prior
            received_interval = <uint32_t>self.received - self.received_prior
            self.expected_prior = expected
            self.received_prior = <uint32_t>self.received
            if expected_interval > received_interval and expected_interval:
                lost_interval = expected_interval - received_interval
                fraction = <uint8_t>((<uint64_t>lost_interval << 8) // expected_interval)
            if self.lsr_arrival_ns:
                dlsr = <uint32_t>((now_ns - self.lsr_arrival_ns) * 65536 // 1000000000)
            wr32(pkt + off, self.remote_ssrc)
            pkt[off + 4] = fraction
            if lost > 0x7FFFFF:
                lost = 0x7FFFFF
            if lost < -0x800000:
                lost = -0x800000
            pkt[off + 5] = (lost >> 16) & 0xFF
            pkt[off + 6] = (lost >> 8) & 0xFF
            pkt[off + 7] = lost & 0xFF
            wr32(pkt + off + 8, ext_max)
            wr32(pkt + off + 12, <uint32_t>self.jitter)
            wr32(pkt + off + 16, self.lsr)
            wr32(pkt + off + 20, dlsr)
            off += 24
        # SDES with CNAME, padded to a 32-bit boundary
        clen = self.cname_len
        words = (4 + 2 + clen + 1 + 3) // 4
        pkt[off] = 0x81
        pkt[off + 1] = 202
        wr16(pkt + off + 2, <uint16_t>words)
        wr32(pkt + off + 4, ssrc)
        pkt[off + 8] = 1
        pkt[off + 9] = clen
        memcpy(pkt + off + 10, self.cname, clen)
        for i in range(off + 10 + clen, off + 4 + 4 * words):
            pkt[i] = 0
        off += 4 + 4 * words
        if bye:
            pkt[off] = 0x81
            pkt[off + 1] = 203
            wr16(pkt + off + 2, 1)
            wr32(pkt + off + 4, ssrc)
            off += 8
        return off

    # ------------------------------------------------------------------ Python face (tests)
    def count(self, unsigned int ssrc, int seq, unsigned int ts, int length,
              long long arrival_ns) -> None:
        self.count_c(ssrc, <uint16_t>seq, ts, length, arrival_ns)

    def receive(self, packet, long long now_ns) -> bool:
        cdef const uint8_t[::1] mv = packet
        if mv.shape[0] == 0:
            return False
        return self.receive_c(&mv[0], mv.shape[0], now_ns) == 0

    def report(self, unsigned int ssrc, unsigned int rtp_ts, unsigned long long sent,
               unsigned long long sent_octets, long long now_ns, long long wall_ns,
               bint bye=False) -> bytes:
        cdef bytes out = PyBytes_FromStringAndSize(NULL, RTCP_MAX)
        cdef int n = self.build_c(<uint8_t *>PyBytes_AS_STRING(out), ssrc, rtp_ts, sent,
                                  sent_octets, now_ns, wall_ns, bye)
        return out[:n]

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def lost(self) -> int:
        return self.lost_c()
