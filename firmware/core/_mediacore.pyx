# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The sans-I/O media core of one G.711 stream: (now, packets in, PCM captured) -> (packets
out, PCM to play).

Owns what happens each packet period, with time passed in: inbound RTP dispatched to the
statistics (``_rtcp``), the telephone-event receiver (``_dtmf``) or the jitter buffer
(``_jitter``); one frame out (audio, or an event packet from the DTMF sender), with the
timestamp advancing whether or not a packet leaves; one frame to play (decoded, or filled by the
concealer, ``_conceal``, given the next buffered frame when there is one); gains; RTCP reports
on their randomised interval. Outbound packets wait in a small outbox for the caller to
protect and send. Knows nothing about sockets, addresses, threads, FIFOs, the packet transform
or the capture processor: the I/O shell
(``firmware._rtpcore.MediaStream``) owns those. A Python face drives it from tests with a
virtual clock.
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from firmware.core._g711 cimport decode_c, encode_c
from firmware.core._rtp cimport RtpHeader, rtp_header_c, rtp_parse_c, wr16
from firmware.core._jitter cimport MAX_FRAME
from firmware.core._dtmf cimport EventPacket
from firmware.core._plc cimport PitchConcealer

cdef extern from "<pthread.h>" nogil:
    int pthread_mutex_init(pthread_mutex_t *, void *)
    int pthread_mutex_destroy(pthread_mutex_t *)
    int pthread_mutex_lock(pthread_mutex_t *)
    int pthread_mutex_unlock(pthread_mutex_t *)

cdef int64_t RTCP_INTERVAL_NS = 5000000000
cdef enum:
    COMFORT_NOISE_PT = 13
    LOOKAHEAD = 3  # frames the concealer may look ahead in the jitter buffer (60 ms at 20 ms)


cdef inline void scale_q12(int16_t *pcm, int n, int q12) noexcept nogil:
    cdef int i
    cdef int32_t v
    for i in range(n):
        v = (<int32_t>pcm[i] * q12) >> 12
        pcm[i] = <int16_t>(32767 if v > 32767 else (-32768 if v < -32768 else v))


cdef class MediaCore:
    """One full-duplex G.711 RTP/RTCP stream without I/O.

    ``receive_rtp_c`` takes a parsed, authenticated packet from the peer; ``tick_c`` runs one
    packet period; the packets it leaves in the outbox (``out``/``out_data``, ``n_out``) go to
    the caller, who reports each one sent with ``sent_c``.
    """

    def __cinit__(self):
        pthread_mutex_init(&self.lock, NULL)

    def __dealloc__(self):
        pthread_mutex_destroy(&self.lock)

    def __init__(self, int payload_type=0, int ptime_ms=20, int dtmf_payload_type=101,
                 unsigned int ssrc=0, int seq=0, unsigned int ts=0, int jitter_target_ms=40,
                 int jitter_min_ms=0, int jitter_max_ms=200, str cname="intercom",
                 Concealer concealer=None):
        if ptime_ms not in (10, 20, 30, 40):
            raise ValueError("ptime must be 10, 20, 30 or 40 ms")
        if payload_type not in (0, 8):
            raise ValueError("payload type must be 0 (PCMU) or 8 (PCMA)")
        self.payload_type = payload_type
        self.law = 1 if payload_type == 8 else 0
        self.ptime_ms = ptime_ms
        self.frame_samples = 8 * ptime_ms
        self.dtmf_payload_type = dtmf_payload_type
        self.ssrc = ssrc
        self.seq = <uint16_t>seq
        self.ts = ts
        self.send_on = True
        self.recv_on = True
        self.marker_next = 1
        self.tx_gain_q12 = 4096
        self.rx_gain_q12 = 4096
        self.jb = JitterBuffer(self.frame_samples, max(1, jitter_target_ms // ptime_ms),
                               max(0, jitter_min_ms // ptime_ms), max(2, jitter_max_ms // ptime_ms))
        self.jb.shed_at_pauses(self.law)
        self.rtcp = Rtcp(cname)
        self.dtmf_out = DtmfSender()
        self.dtmf_in = DtmfReceiver()
        # by default G.711 Appendix I style pitch repetition (_plc); any Concealer plugs in here
        self.plc = concealer if concealer is not None else PitchConcealer()
        memset(&self.st, 0, sizeof(Counters))

    # ------------------------------------------------------------------ inputs
    cdef int receive_rtp_c(self, const uint8_t *pkt, const RtpHeader *h,
                           int64_t arrival_ns) noexcept nogil:
        """A packet from the peer: 0 taken, 1 ignored (not receiving), -1 wrong payload type."""
        if not self.recv_on:
            return 1
        if h.pt == self.dtmf_payload_type:
            if self.dtmf_in.receive_c(pkt + h.offset, h.length, h.ts) < 0:
                self.st.malformed += 1
        elif h.pt == self.payload_type:
            self.rtcp.count_c(h.ssrc, h.seq, h.ts, h.length, arrival_ns)
            self.jb.put_c(h.ts, h.seq, h.ssrc, pkt + h.offset, h.length)
            return 0
        elif h.pt != COMFORT_NOISE_PT:  # comfort noise: accepted, not played
            self.st.wrong_pt += 1
            return -1
        self.rtcp.count_c(h.ssrc, h.seq, h.ts, h.length, arrival_ns)
        return 0

    cdef void malformed_c(self) noexcept nogil:
        """A datagram the shell could not parse as RTP (counted with the core's statistics)."""
        self.st.malformed += 1

    cdef int receive_rtcp_c(self, const uint8_t *pkt, int n, int64_t now_ns) noexcept nogil:
        """An RTCP packet from the peer: 0 counted, -1 malformed (counted)."""
        if self.rtcp.receive_c(pkt, n, now_ns) < 0:
            self.st.malformed += 1
            return -1
        return 0

    # ------------------------------------------------------------------ one period
    cdef int tick_c(self, int64_t now_ns, int64_t wall_ns, int16_t *captured, int got,
                    bint peer, int16_t *play) noexcept nogil:
        """One packet period: ``captured`` (``got`` of frame_samples valid, processed in
        place: gain) becomes a packet; ``play`` gets the frame to play. Returns ``n_out``."""
        self.n_out = 0
        if not self.started:
            self.started = True
            self.next_rtcp_ns = now_ns + RTCP_INTERVAL_NS // 2
        self._send_frame(captured, got, peer)
        self._playout(play)
        if now_ns >= self.next_rtcp_ns:
            if peer:
                self._rtcp(now_ns, wall_ns, False)
            # 5 s, varied by +-25 % from the sequence number (RFC 3550 §6.2 randomisation)
            self.next_rtcp_ns = now_ns + RTCP_INTERVAL_NS * 3 // 4 + \
                (RTCP_INTERVAL_NS // 2) * (self.seq % 101) // 100
        return self.n_out

    cdef int bye_c(self, int64_t now_ns, int64_t wall_ns) noexcept nogil:
        """The last report with BYE in the outbox; returns ``n_out``."""
        self.n_out = 0
        self._rtcp(now_ns, wall_ns, True)
        return self.n_out

    cdef void sent_c(self, int i) noexcept nogil:
        """The caller put outbox packet ``i`` on the wire."""
        if self.out[i].rtcp:
            self.st.rtcp_sent += 1
        else:
            self.st.sent += 1
            self.st.sent_octets += self.out[i].octets

    cdef void _send_frame(self, int16_t *pcm, int got, bint peer) noexcept nogil:
        cdef int fs = self.frame_samples
        cdef int copies, i
        cdef bint send
        cdef EventPacket ev
        cdef uint8_t *p
        if got < fs:
            if got < 0:
                got = 0
            if self.send_on:
                self.st.source_underruns += 1
            memset(&pcm[got], 0, (fs - got) * sizeof(int16_t))
        if self.tx_gain_q12 != 4096:
            scale_q12(pcm, fs, self.tx_gain_q12)
        pthread_mutex_lock(&self.lock)
        send = self.send_on and peer
        pthread_mutex_unlock(&self.lock)
        copies = self.dtmf_out.step_c(self.ts, fs, self.ptime_ms, send, &ev)
        if copies:
            # event packets share the event's start timestamp; the end goes three times
            for i in range(copies):
                p = self.out_data[self.n_out]
                rtp_header_c(p, self.dtmf_payload_type, ev.marker and i == 0, self.seq, ev.ts,
                             self.ssrc)
                p[12] = ev.code
                p[13] = (0x80 if ev.end else 0) | 10
                wr16(p + 14, <uint16_t>ev.duration)
                self._queue(16, 4, False)
                self.seq += 1
            if ev.end:
                self.marker_next = 1
        elif send:
            p = self.out_data[self.n_out]
            rtp_header_c(p, self.payload_type, self.marker_next, self.seq, self.ts, self.ssrc)
            encode_c(pcm, p + 12, fs, self.law)
            self._queue(12 + fs, fs, False)
            self.marker_next = 0
            self.seq += 1
        else:
            self.marker_next = 1
        self.ts += fs  # the clock runs whether or not a packet leaves

    cdef void _queue(self, int n, int octets, bint rtcp) noexcept nogil:
        self.out[self.n_out].n = n
        self.out[self.n_out].octets = octets
        self.out[self.n_out].rtcp = rtcp
        self.n_out += 1

    cdef void _playout(self, int16_t *pcm) noexcept nogil:
        """The one place a frame to play is decided: decoded, or concealed."""
        cdef uint8_t enc[MAX_FRAME]
        cdef int16_t future[MAX_FRAME]
        cdef int fs = self.frame_samples, ahead
        cdef int n = self.jb.pop_c(enc) if self.recv_on else 0
        if n == fs:
            decode_c(enc, pcm, fs, self.law)
            self.plc.good_c(pcm, fs)
            self.heard = True
        elif self.heard:
            # a frame already buffered within LOOKAHEAD periods: bridge the gap towards it
            ahead = 0
            n = 0
            while self.recv_on and ahead < LOOKAHEAD and n == 0:
                n = self.jb.peek_c(enc, ahead)
                ahead += 1
            if n == fs:
                decode_c(enc, future, fs, self.law)
                self.plc.conceal_towards_c(pcm, fs, future, ahead)
                self.st.bridged_frames += 1
            else:
                self.plc.conceal_c(pcm, fs)
            self.st.concealed_frames += 1
        else:
            memset(pcm, 0, fs * sizeof(int16_t))
        if self.rx_gain_q12 != 4096:
            scale_q12(pcm, fs, self.rx_gain_q12)

    cdef void _rtcp(self, int64_t now_ns, int64_t wall_ns, bint bye) noexcept nogil:
        cdef int n = self.rtcp.build_c(self.out_data[self.n_out], self.ssrc, self.ts,
                                       self.st.sent, self.st.sent_octets, now_ns, wall_ns, bye)
        self._queue(n, 0, True)

    # ------------------------------------------------------------------ control (any thread)
    def set_direction(self, bint send, bint receive) -> None:
        pthread_mutex_lock(&self.lock)
        if send and not self.send_on:
            self.marker_next = 1
        self.send_on = send
        self.recv_on = receive
        pthread_mutex_unlock(&self.lock)

    def send_dtmf(self, str digits) -> int:
        """Queue RFC 4733 events; returns how many were queued (unknown characters skipped)."""
        return self.dtmf_out.queue_digits(digits)

    def received_digits(self) -> str:
        """Digits received since the last call."""
        return self.dtmf_in.take()

    def stats(self) -> dict:
        cdef Counters s = self.st
        cdef Rtcp r = self.rtcp
        return {
            "sent": s.sent, "sent_octets": s.sent_octets, "received": r.received,
            "received_octets": r.received_octets, "lost": max(r.lost_c(), 0),
            "late": self.jb.late, "duplicates": self.jb.duplicates,
            "reordered": self.jb.reordered, "jitter_ms": round(r.jitter / 8.0, 3),
            "concealed_ms": s.concealed_frames * self.ptime_ms,
            "bridged_ms": s.bridged_frames * self.ptime_ms,  # of it, towards a frame in hand
            "buffer_depth_ms": self.jb.depth_c() * self.ptime_ms,
            "buffer_target_ms": self.jb.target * self.ptime_ms,
            "malformed": s.malformed, "wrong_payload_type": s.wrong_pt,
            "resyncs": self.jb.resyncs,
            "dtmf_sent": self.dtmf_out.events_sent,
            "dtmf_received": self.dtmf_in.events_received,
            "rtcp_sent": s.rtcp_sent, "rtcp_received": r.rtcp_received,
            "source_underruns": s.source_underruns,
            "timestamp": self.ts, "sequence": self.seq, "ssrc": self.ssrc,
        }

    # ------------------------------------------------------------------ Python face (tests)
    def receive_rtp(self, packet, long long arrival_ns) -> int:
        """One datagram from the peer at wall-clock ``arrival_ns``: 0 taken, 1 ignored,
        -1 wrong payload type, -2 malformed (counted)."""
        cdef const uint8_t[::1] mv = packet
        cdef RtpHeader h
        if mv.shape[0] == 0 or rtp_parse_c(&mv[0], mv.shape[0], &h) != 0:
            self.st.malformed += 1
            return -2
        return self.receive_rtp_c(&mv[0], &h, arrival_ns)

    def receive_rtcp(self, packet, long long now_ns) -> int:
        cdef const uint8_t[::1] mv = packet
        if mv.shape[0] == 0:
            self.st.malformed += 1
            return -1
        return self.receive_rtcp_c(&mv[0], mv.shape[0], now_ns)

    def tick(self, long long now_ns, long long wall_ns, captured=b"", bint peer=True):
        """One period: ([("rtp"|"rtcp", packet), ...], PCM to play as bytes).

        ``captured`` is little-endian 16-bit PCM (short or empty: an underrun). Every packet
        returned counts as sent.
        """
        cdef const uint8_t[::1] mv = captured
        cdef int fs = self.frame_samples
        cdef int16_t cap[MAX_FRAME]
        cdef int got = mv.shape[0] // 2
        cdef int i, n
        if got > fs:
            got = fs
        if got:
            memcpy(cap, &mv[0], got * 2)
        cdef bytes play = PyBytes_FromStringAndSize(NULL, fs * 2)
        n = self.tick_c(now_ns, wall_ns, cap, got, peer, <int16_t *>PyBytes_AS_STRING(play))
        return self._drain(n), play

    def bye(self, long long now_ns, long long wall_ns) -> bytes:
        self.bye_c(now_ns, wall_ns)
        return self._drain(1)[0][1]

    cdef list _drain(self, int n):
        out = []
        for i in range(n):
            out.append(("rtcp" if self.out[i].rtcp else "rtp",
                        PyBytes_FromStringAndSize(<char *>self.out_data[i], self.out[i].n)))
            self.sent_c(i)
        return out
