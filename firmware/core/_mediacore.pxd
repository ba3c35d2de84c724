# cython: language_level=3
"""The sans-I/O media core of one stream (declarations): time, packets and PCM in and out."""

from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from firmware.core._rtp cimport RtpHeader
from firmware.core._jitter cimport JitterBuffer
from firmware.core._rtcp cimport Rtcp
from firmware.core._dtmf cimport DtmfSender, DtmfReceiver
from firmware.core._conceal cimport Concealer

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass

cdef enum:
    OUTBOX = 4        # packets one period can produce: an event end three times, and RTCP
    PACKET_MAX = 400  # bytes: 12 + 320 (40 ms of G.711) + a transform's trailer, or RTCP


cdef struct OutPacket:
    int n       # bytes
    int octets  # payload octets, for the SR's sender octet count
    bint rtcp   # goes to the RTCP port


cdef struct Counters:
    uint64_t sent, sent_octets, rtcp_sent, concealed_frames, bridged_frames, source_underruns
    uint64_t malformed, wrong_pt


cdef class MediaCore:
    cdef readonly int payload_type, dtmf_payload_type, ptime_ms, law, frame_samples
    cdef uint32_t ssrc, ts
    cdef uint16_t seq
    cdef int marker_next
    cdef bint send_on, recv_on, started, heard
    cdef int64_t next_rtcp_ns
    cdef public int tx_gain_q12, rx_gain_q12  # 4096 = unity
    cdef pthread_mutex_t lock  # direction changes from Python while the loop runs
    cdef readonly JitterBuffer jb
    cdef readonly Rtcp rtcp
    cdef readonly DtmfSender dtmf_out
    cdef readonly DtmfReceiver dtmf_in
    cdef readonly Concealer plc
    cdef Counters st
    cdef OutPacket out[OUTBOX]
    cdef uint8_t out_data[OUTBOX][PACKET_MAX]
    cdef int n_out

    cdef int receive_rtp_c(self, const uint8_t *pkt, const RtpHeader *h,
                           int64_t arrival_ns) noexcept nogil
    cdef int receive_rtcp_c(self, const uint8_t *pkt, int n, int64_t now_ns) noexcept nogil
    cdef void malformed_c(self) noexcept nogil
    cdef int tick_c(self, int64_t now_ns, int64_t wall_ns, int16_t *captured, int got,
                    bint peer, int16_t *play) noexcept nogil
    cdef int bye_c(self, int64_t now_ns, int64_t wall_ns) noexcept nogil
    cdef void sent_c(self, int i) noexcept nogil
    cdef void _send_frame(self, int16_t *pcm, int got, bint peer) noexcept nogil
    cdef void _queue(self, int n, int octets, bint rtcp) noexcept nogil
    cdef void _playout(self, int16_t *pcm) noexcept nogil
    cdef void _rtcp(self, int64_t now_ns, int64_t wall_ns, bint bye) noexcept nogil
    cdef list _drain(self, int n)
