# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The real-time media core: G.711, RTP/RTCP, jitter buffer, RFC 4733 and the 20 ms loop.

Owns everything that runs every packet period: the G.711 tables (bit-exact to ITU-T G.191),
RTP pack/parse with validation, the adaptive jitter buffer with loss concealment, DTMF events
both ways, RTCP SR/RR/BYE, and the loop itself, which holds no GIL: it sleeps to absolute
CLOCK_MONOTONIC deadlines, moves datagrams with recvfrom/sendto on file descriptors it is given,
and exchanges PCM with Python only through mutex-guarded FIFOs. An optional packet transform
(``firmware._transform``; SRTP is one) sits between the packets and the socket: it protects
what leaves and unprotects what arrives, and its refusals are counted drops. An optional
capture processor (``firmware._processor``; echo cancellation is one) sees every frame played
and cleans every frame captured before it is encoded. Knows nothing about SIP, SDP parsing,
sockets' creation, ciphers, echo cancellation, ALSA or files.
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, free
from libc.errno cimport errno, EINTR
from posix.unistd cimport write
from posix.time cimport clock_gettime, clock_nanosleep, timespec, CLOCK_MONOTONIC, CLOCK_REALTIME
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from firmware._transform cimport PacketTransform, TRANSFORM_TRAILER_MAX, XF_AUTH, XF_REPLAY
from firmware._processor cimport CaptureProcessor

cdef extern from "<time.h>" nogil:
    int TIMER_ABSTIME

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef unsigned long pthread_t
    struct sched_param:
        int sched_priority
    int pthread_mutex_init(pthread_mutex_t *, void *)
    int pthread_mutex_destroy(pthread_mutex_t *)
    int pthread_mutex_lock(pthread_mutex_t *)
    int pthread_mutex_unlock(pthread_mutex_t *)
    pthread_t pthread_self()
    int pthread_setschedparam(pthread_t, int, const sched_param *)

cdef extern from "<sched.h>" nogil:
    int SCHED_FIFO

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *)
    cmsghdr *CMSG_NXTHDR(msghdr *, cmsghdr *)
    unsigned char *CMSG_DATA(cmsghdr *)
    ssize_t recvfrom(int, void *, size_t, int, sockaddr *, socklen_t *)
    ssize_t recvmsg(int, msghdr *, int)
    ssize_t sendto(int, const void *, size_t, int, const sockaddr *, socklen_t)
    int setsockopt(int, int, int, const void *, socklen_t)
    int MSG_DONTWAIT
    int SOL_SOCKET
    int SO_TIMESTAMPNS
    int SCM_TIMESTAMPNS

cdef extern from "<netinet/in.h>" nogil:
    ctypedef uint32_t in_addr_t
    struct in_addr:
        in_addr_t s_addr
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    int AF_INET
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)
    uint32_t htonl(uint32_t)
    uint32_t ntohl(uint32_t)

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int, const char *, void *)

# --------------------------------------------------------------------------------- G.711
cdef uint8_t _ulaw_enc[65536]
cdef uint8_t _alaw_enc[65536]
cdef int16_t _ulaw_dec[256]
cdef int16_t _alaw_dec[256]


cdef int _alaw_encode_calc(int x) noexcept nogil:
    cdef int ix = ((~x) >> 4) if x < 0 else (x >> 4)
    cdef int exp
    if ix > 15:
        exp = 1
        while ix > 31:
            ix >>= 1
            exp += 1
        ix = (ix - 16) + (exp << 4)
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


cdef int _alaw_decode_calc(int code) noexcept nogil:
    cdef int ix = (code ^ 0x55) & 0x7F
    cdef int exp = ix >> 4
    cdef int mant = ix & 0x0F
    if exp > 0:
        mant += 16
    mant = (mant << 4) + 8
    if exp > 1:
        mant <<= exp - 1
    return mant if code > 127 else -mant


cdef int _ulaw_encode_calc(int x) noexcept nogil:
    cdef int mag = ((~x) >> 2) if x < 0 else (x >> 2)
    cdef int seg = 1
    cdef int i
    mag += 33
    if mag > 0x1FFF:
        mag = 0x1FFF
    i = mag >> 6
    while i:
        seg += 1
        i >>= 1
    cdef int code = ((8 - seg) << 4) | (0x0F - ((mag >> seg) & 0x0F))
    return (code | 0x80) if x >= 0 else code


cdef int _ulaw_decode_calc(int code) noexcept nogil:
    cdef int inv = (~code) & 0xFF
    cdef int exp = (inv >> 4) & 7
    cdef int mant = inv & 0x0F
    cdef int step = 4 << (exp + 1)
    cdef int mag = (0x80 << exp) + step * mant + step // 2 - 4 * 33
    return mag if code >= 0x80 else -mag


cdef void _build_tables() noexcept nogil:
    cdef int i
    for i in range(65536):
        _ulaw_enc[i] = <uint8_t>_ulaw_encode_calc(<int16_t>i)
        _alaw_enc[i] = <uint8_t>_alaw_encode_calc(<int16_t>i)
    for i in range(256):
        _ulaw_dec[i] = <int16_t>_ulaw_decode_calc(i)
        _alaw_dec[i] = <int16_t>_alaw_decode_calc(i)


_build_tables()
cdef uint16_t _probe = 1
cdef bint _LITTLE_ENDIAN = (<uint8_t *>&_probe)[0] == 1

ULAW = 0
ALAW = 1


cdef inline void _encode(const int16_t *pcm, uint8_t *out, int n, int law) noexcept nogil:
    cdef int i
    cdef const uint8_t *table = &_alaw_enc[0] if law else &_ulaw_enc[0]
    for i in range(n):
        out[i] = table[<uint16_t>pcm[i]]


cdef inline void _decode(const uint8_t *data, int16_t *out, int n, int law) noexcept nogil:
    cdef int i
    cdef const int16_t *table = &_alaw_dec[0] if law else &_ulaw_dec[0]
    for i in range(n):
        out[i] = table[data[i]]


cdef inline const uint8_t *_view(object data, Py_ssize_t *n, Py_buffer *view,
                                 bint *held) except NULL:
    """Borrow the bytes of ``data``: the bytes fast path, else the buffer protocol."""
    if type(data) is bytes:
        n[0] = PyBytes_GET_SIZE(data)
        held[0] = False
        return <const uint8_t *>PyBytes_AS_STRING(data)
    PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    held[0] = True
    n[0] = view.len
    return <const uint8_t *>view.buf


cdef bytes _encode_bytes(object pcm, int law):
    cdef Py_buffer view
    cdef Py_ssize_t n, i
    cdef bint held
    cdef const uint8_t *src = _view(pcm, &n, &view, &held)
    if n & 1:
        if held:
            PyBuffer_Release(&view)
        raise ValueError("PCM must be whole 16-bit samples")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n // 2)
    cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
    cdef const uint8_t *table = &_alaw_enc[0] if law else &_ulaw_enc[0]
    for i in range(n // 2):  # little-endian on any host
        dst[i] = table[<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8))]
    if held:
        PyBuffer_Release(&view)
    return out


cdef bytes _decode_bytes(object data, int law):
    cdef Py_buffer view
    cdef Py_ssize_t n, i
    cdef bint held
    cdef const uint8_t *src = _view(data, &n, &view, &held)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n * 2)
    cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
    cdef const int16_t *table = &_alaw_dec[0] if law else &_ulaw_dec[0]
    cdef uint16_t v
    cdef int16_t *dst16 = <int16_t *>dst
    if _LITTLE_ENDIAN:
        for i in range(n):
            dst16[i] = table[src[i]]
    else:
        for i in range(n):
            v = <uint16_t>table[src[i]]
            dst[2 * i] = v & 0xFF
            dst[2 * i + 1] = v >> 8
    if held:
        PyBuffer_Release(&view)
    return out


def encode_ulaw(pcm) -> bytes:
    """16-bit little-endian signed PCM -> G.711 mu-law (ITU-T G.191 bit-exact)."""
    return _encode_bytes(pcm, 0)


def encode_alaw(pcm) -> bytes:
    return _encode_bytes(pcm, 1)


def decode_ulaw(data) -> bytes:
    return _decode_bytes(data, 0)


def decode_alaw(data) -> bytes:
    return _decode_bytes(data, 1)


# --------------------------------------------------------------------------------- RTP
cdef struct RtpHeader:
    int pt
    int marker
    uint16_t seq
    uint32_t ts
    uint32_t ssrc
    int offset
    int length

cdef inline uint16_t _rd16(const uint8_t *p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline uint32_t _rd32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _wr16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF


cdef inline void _wr32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef int _rtp_parse(const uint8_t *d, int n, RtpHeader *h) noexcept nogil:
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
        words = _rd16(d + off + 2)
        off += 4 + 4 * words
        if off > end:
            return -6
    h.pt = d[1] & 0x7F
    h.marker = (d[1] >> 7) & 1
    h.seq = _rd16(d + 2)
    h.ts = _rd32(d + 4)
    h.ssrc = _rd32(d + 8)
    h.offset = off
    h.length = end - off
    return 0


RTP_ERRORS = {-1: "shorter than an RTP header", -2: "RTP version is not 2",
              -3: "bad RTP padding", -4: "CSRC list longer than the packet",
              -5: "truncated header extension", -6: "header extension longer than the packet"}


cdef inline void _rtp_header(uint8_t *p, int pt, int marker, uint16_t seq, uint32_t ts,
                             uint32_t ssrc) noexcept nogil:
    p[0] = 0x80
    p[1] = (0x80 if marker else 0) | (pt & 0x7F)
    _wr16(p + 2, seq)
    _wr32(p + 4, ts)
    _wr32(p + 8, ssrc)


def rtp_pack(int payload_type, bint marker, int sequence, unsigned int timestamp,
             unsigned int ssrc, payload) -> bytes:
    cdef const uint8_t[::1] mv = payload
    cdef Py_ssize_t n = mv.shape[0]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 12 + n)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    _rtp_header(p, payload_type, marker, <uint16_t>(sequence & 0xFFFF), timestamp, ssrc)
    if n:
        memcpy(p + 12, &mv[0], n)
    return out


def rtp_parse(data) -> tuple:
    """(payload_type, marker, sequence, timestamp, ssrc, payload); ValueError if invalid."""
    cdef const uint8_t[::1] mv = data
    cdef RtpHeader h
    cdef int n = mv.shape[0]
    cdef int rc = _rtp_parse(&mv[0], n, &h) if n else -1
    if rc:
        raise ValueError(RTP_ERRORS[rc])
    return (h.pt, bool(h.marker), h.seq, h.ts, h.ssrc, bytes(mv[h.offset:h.offset + h.length]))


# --------------------------------------------------------------------------------- FIFO
cdef class PcmFifo:
    """Mutex-guarded ring of 16-bit samples between a Python audio thread and the loop."""

    cdef int16_t *buf
    cdef int cap, head, count
    cdef pthread_mutex_t lock
    cdef public uint64_t overruns

    def __cinit__(self, int capacity=8000):
        self.buf = <int16_t *>malloc(capacity * sizeof(int16_t))
        if self.buf == NULL:
            raise MemoryError()
        self.cap = capacity
        self.head = 0
        self.count = 0
        self.overruns = 0
        pthread_mutex_init(&self.lock, NULL)

    def __dealloc__(self):
        if self.buf != NULL:
            free(self.buf)
        pthread_mutex_destroy(&self.lock)

    cdef int push(self, const int16_t *src, int n) noexcept nogil:
        """Append; when full the oldest samples go (counted): audio stays current."""
        cdef int i, drop
        pthread_mutex_lock(&self.lock)
        if n > self.cap:
            self.overruns += n - self.cap
            src += n - self.cap
            n = self.cap
        drop = self.count + n - self.cap
        if drop > 0:
            self.head = (self.head + drop) % self.cap
            self.count -= drop
            self.overruns += drop
        for i in range(n):
            self.buf[(self.head + self.count + i) % self.cap] = src[i]
        self.count += n
        pthread_mutex_unlock(&self.lock)
        return n

    cdef int pull(self, int16_t *dst, int n) noexcept nogil:
        cdef int i, got
        pthread_mutex_lock(&self.lock)
        got = n if n < self.count else self.count
        for i in range(got):
            dst[i] = self.buf[(self.head + i) % self.cap]
        self.head = (self.head + got) % self.cap
        self.count -= got
        pthread_mutex_unlock(&self.lock)
        return got

    def write(self, pcm) -> int:
        """Add little-endian 16-bit PCM bytes; returns samples written."""
        cdef const uint8_t[::1] mv = pcm
        cdef int n = mv.shape[0] // 2
        if n == 0:
            return 0
        cdef int16_t *tmp = <int16_t *>malloc(n * sizeof(int16_t))
        cdef int i
        for i in range(n):
            tmp[i] = <int16_t>(mv[2 * i] | (mv[2 * i + 1] << 8))
        with nogil:
            self.push(tmp, n)
        free(tmp)
        return n

    def read(self, int max_samples=-1) -> bytes:
        """Take up to ``max_samples`` (all when -1) as little-endian PCM bytes."""
        if max_samples < 0:
            max_samples = self.cap
        cdef int16_t *tmp = <int16_t *>malloc(max_samples * sizeof(int16_t) + 2)
        cdef int got, i
        with nogil:
            got = self.pull(tmp, max_samples)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, got * 2)
        cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
        for i in range(got):
            dst[2 * i] = (<uint16_t>tmp[i]) & 0xFF
            dst[2 * i + 1] = (<uint16_t>tmp[i]) >> 8
        free(tmp)
        return out

    cdef int level(self) noexcept nogil:
        cdef int n
        pthread_mutex_lock(&self.lock)
        n = self.count
        pthread_mutex_unlock(&self.lock)
        return n

    def __len__(self):
        return self.count


# --------------------------------------------------------------------------------- jitter buffer
cdef enum:
    JB_SLOTS = 64
    MAX_FRAME = 320  # bytes: 40 ms of G.711
    MAX_DIGITS = 64
    MAX_CNAME = 64

cdef struct Slot:
    int used
    uint32_t ts
    uint16_t seq
    int length
    uint8_t data[MAX_FRAME]

# put() results
JB_OK, JB_LATE, JB_DUPLICATE, JB_RESYNC, JB_TOO_EARLY = 0, 1, 2, 3, 4


cdef class JitterBuffer:
    """Adaptive playout buffer for one RTP stream of fixed-size frames.

    Packets are placed by timestamp; ``pop`` is called once per frame period and returns the
    frame due now or 0 (missing: the caller conceals). The playout delay starts at ``target``
    frames, grows by one frame whenever a packet arrives too late (up to ``max_frames``) and
    shrinks by one when the buffer stays deeper than needed for 2 s (down to ``min_frames``).
    """

    cdef Slot slots[JB_SLOTS]
    cdef public int frame_samples, target, min_frames, max_frames
    cdef public bint started
    cdef uint32_t play_ts, ssrc
    cdef uint16_t highest_seq
    cdef int deep_ticks
    cdef public uint64_t late, duplicates, reordered, resyncs, too_early, shrinks, grows

    def __cinit__(self, int frame_samples=160, int target=2, int min_frames=1,
                  int max_frames=10):
        self.frame_samples = frame_samples
        self.min_frames = min_frames
        self.max_frames = max_frames if max_frames < JB_SLOTS - 2 else JB_SLOTS - 2
        self.target = target
        self.reset_c()

    def reset(self):
        self.reset_c()

    cdef void reset_c(self) noexcept nogil:
        cdef int i
        for i in range(JB_SLOTS):
            self.slots[i].used = 0
        self.started = False
        self.deep_ticks = 0

    cdef int put_c(self, uint32_t ts, uint16_t seq, uint32_t ssrc, const uint8_t *data,
                   int length) noexcept nogil:
        cdef int32_t ahead
        cdef Slot *s
        cdef int rc = 0
        if length > MAX_FRAME:
            length = MAX_FRAME
        if self.started and ssrc != self.ssrc:
            self.resyncs += 1
            self.reset_c()
            rc = 3
        if not self.started:
            self.started = True
            self.ssrc = ssrc
            self.play_ts = ts - <uint32_t>(self.target * self.frame_samples)
            self.highest_seq = seq
        ahead = <int32_t>(ts - self.play_ts)
        if ahead < 0:
            self.late += 1
            if self.target < self.max_frames:  # grow: play one concealed frame more
                self.target += 1
                self.grows += 1
                self.play_ts -= self.frame_samples
            return 1
        if ahead >= (JB_SLOTS - 1) * self.frame_samples:
            if ahead > 8000 * 2:  # a jump of more than 2 s: the sender restarted
                self.resyncs += 1
                self.reset_c()
                return self.put_c(ts, seq, ssrc, data, length) or 3
            self.too_early += 1
            return 4
        if <int16_t>(seq - self.highest_seq) < 0:
            self.reordered += 1
        else:
            self.highest_seq = seq
        s = &self.slots[(ts // self.frame_samples) % JB_SLOTS]
        if s.used and s.ts == ts:
            self.duplicates += 1
            return 2
        s.used = 1
        s.ts = ts
        s.seq = seq
        s.length = length
        memcpy(s.data, data, length)
        return rc

    cdef int pop_c(self, uint8_t *out) noexcept nogil:
        cdef Slot *s
        cdef int n = 0
        if not self.started:
            return 0
        s = &self.slots[(self.play_ts // self.frame_samples) % JB_SLOTS]
        if s.used and s.ts == self.play_ts:
            memcpy(out, s.data, s.length)
            n = s.length
            s.used = 0
        self.play_ts += self.frame_samples
        # shrink when more than target+1 frames wait for 100 consecutive periods
        if self.depth_c() > self.target + 1 and self.target > self.min_frames:
            self.deep_ticks += 1
            if self.deep_ticks >= 100:
                s = &self.slots[(self.play_ts // self.frame_samples) % JB_SLOTS]
                s.used = 0
                self.play_ts += self.frame_samples
                self.target -= 1
                self.shrinks += 1
                self.deep_ticks = 0
        else:
            self.deep_ticks = 0
        return n

    cdef int depth_c(self) noexcept nogil:
        """Frames buffered at or after the playout point."""
        cdef int i, d = 0
        for i in range(JB_SLOTS):
            if self.slots[i].used and <int32_t>(self.slots[i].ts - self.play_ts) >= 0:
                d += 1
        return d

    def put(self, unsigned int ts, int seq, unsigned int ssrc, payload) -> int:
        cdef const uint8_t[::1] mv = payload
        return self.put_c(ts, <uint16_t>seq, ssrc, &mv[0] if mv.shape[0] else NULL,
                          mv.shape[0])

    def pop(self):
        """The frame due now (bytes), or None when it is missing."""
        cdef uint8_t out[MAX_FRAME]
        cdef int n = self.pop_c(out)
        return out[:n] if n else None

    @property
    def depth(self) -> int:
        return self.depth_c()


# --------------------------------------------------------------------------------- the stream
cdef int64_t RTCP_INTERVAL_NS = 5000000000
DTMF_EVENTS = "0123456789*#ABCD"


cdef struct Stats:
    uint64_t sent, sent_octets, received, received_octets, late, duplicates, reordered
    uint64_t concealed_frames, malformed, wrong_pt, wrong_source, dtmf_sent, dtmf_received
    uint64_t rtcp_sent, rtcp_received, source_underruns, ticks, late_wakeups
    uint64_t auth_failures, replays, unprotect_errors, protect_errors  # the packet transform
    uint64_t rtcp_refused  # RTCP the transform refused, whatever the reason
    uint64_t max_wakeup_late_ns
    int64_t sum_wakeup_late_ns
    double jitter  # RFC 3550 A.8, timestamp units


cdef inline void _scale(int16_t *pcm, int n, int q12) noexcept nogil:
    cdef int i
    cdef int32_t v
    for i in range(n):
        v = (<int32_t>pcm[i] * q12) >> 12
        pcm[i] = <int16_t>(32767 if v > 32767 else (-32768 if v < -32768 else v))


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef class MediaStream:
    """One full-duplex G.711 RTP stream with its RTCP, driven by ``run()`` on its own thread.

    The caller owns the sockets (two bound UDP sockets: RTP and RTCP) and passes their file
    descriptors; it feeds ``source`` with PCM to send and drains ``sink`` of PCM received.
    ``transform`` (optional) protects every packet before ``sendto`` and unprotects every
    datagram after ``recvmsg``; without one those steps are skipped.
    """

    cdef int rtp_fd, rtcp_fd
    cdef sockaddr_in remote, remote_rtcp
    cdef public int payload_type, dtmf_payload_type, ptime_ms, law
    cdef int frame_samples
    cdef uint32_t ssrc, ts, remote_ssrc
    cdef uint16_t seq
    cdef bint stop_flag, send_on, recv_on, latch, latched, have_remote
    cdef int marker_next
    cdef public PcmFifo source, sink
    cdef public JitterBuffer jb
    cdef Stats st
    cdef pthread_mutex_t lock
    # RFC 3550 A.1/A.3 receive statistics
    cdef uint16_t max_seq
    cdef uint32_t cycles, base_seq, received_prior, expected_prior
    cdef bint seq_init
    cdef double last_transit
    cdef bint have_transit
    cdef uint32_t lsr
    cdef int64_t lsr_arrival_ns
    # DTMF out: queue of event codes, state of the one being sent
    cdef uint8_t dq[MAX_DIGITS]
    cdef int dq_head, dq_count
    cdef int ev_code, ev_frames, ev_sent, ev_end_sent, ev_gap
    cdef uint32_t ev_ts
    cdef public int dtmf_duration_ms
    # DTMF in
    cdef uint8_t din[MAX_DIGITS]
    cdef int din_count
    cdef uint32_t last_event_ts
    cdef bint have_event
    cdef int notify_fd  # eventfd/pipe written when a digit is queued (-1: none)
    # PLC
    cdef int16_t last_pcm[MAX_FRAME]
    cdef int conceal_run
    cdef bint have_last
    cdef public bint realtime_ok
    cdef public int spin_us
    cdef public int tx_gain_q12, rx_gain_q12  # 4096 = unity
    cdef int64_t next_rtcp_ns
    cdef uint8_t cname[MAX_CNAME]
    cdef int cname_len
    cdef PacketTransform xform
    cdef CaptureProcessor proc

    def __cinit__(self):
        pthread_mutex_init(&self.lock, NULL)

    def __dealloc__(self):
        pthread_mutex_destroy(&self.lock)

    def __init__(self, int rtp_fd, int rtcp_fd, int payload_type=0, int ptime_ms=20,
                 int dtmf_payload_type=101, unsigned int ssrc=0, int seq=0,
                 unsigned int ts=0, bint latch=False, int jitter_target_ms=40,
                 int jitter_min_ms=20, int jitter_max_ms=200, str cname="intercom",
                 PacketTransform transform=None, CaptureProcessor processor=None,
                 int notify_fd=-1):
        if ptime_ms not in (10, 20, 30, 40):
            raise ValueError("ptime must be 10, 20, 30 or 40 ms")
        if payload_type not in (0, 8):
            raise ValueError("payload type must be 0 (PCMU) or 8 (PCMA)")
        self.rtp_fd = rtp_fd
        self.rtcp_fd = rtcp_fd
        cdef int one = 1
        # kernel receive timestamps: interarrival jitter from when packets really arrived,
        # not from when the loop woke up to read them
        setsockopt(rtp_fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one))
        self.payload_type = payload_type
        self.law = 1 if payload_type == 8 else 0
        self.ptime_ms = ptime_ms
        self.frame_samples = 8 * ptime_ms
        self.dtmf_payload_type = dtmf_payload_type
        self.ssrc = ssrc
        self.seq = <uint16_t>seq
        self.ts = ts
        self.latch = latch
        self.send_on = True
        self.recv_on = True
        self.marker_next = 1
        self.source = PcmFifo(8000)
        self.sink = PcmFifo(8000)
        self.jb = JitterBuffer(self.frame_samples, max(1, jitter_target_ms // ptime_ms),
                               max(1, jitter_min_ms // ptime_ms), max(2, jitter_max_ms // ptime_ms))
        memset(&self.st, 0, sizeof(Stats))
        self.dtmf_duration_ms = 100
        self.tx_gain_q12 = 4096
        self.rx_gain_q12 = 4096
        self.ev_code = -1
        raw = cname.encode()[:MAX_CNAME]
        self.cname_len = len(raw)
        memcpy(self.cname, <const char *>raw, self.cname_len)
        self.xform = transform
        self.proc = processor
        self.notify_fd = notify_fd

    @property
    def transform(self):
        """The packet transform between this stream and its sockets, or None."""
        return self.xform

    @property
    def processor(self):
        """The capture processor around this stream's PCM (echo canceller), or None."""
        return self.proc

    # ------------------------------------------------------------------ control (Python side)
    def set_remote(self, str host, int port, int rtcp_port=0):
        cdef sockaddr_in a
        memset(&a, 0, sizeof(a))
        a.sin_family = AF_INET
        a.sin_port = htons(port)
        if inet_pton(AF_INET, host.encode(), &a.sin_addr) != 1:
            raise ValueError(f"not an IPv4 address: {host!r}")
        pthread_mutex_lock(&self.lock)
        self.remote = a
        self.remote_rtcp = a
        self.remote_rtcp.sin_port = htons(rtcp_port or port + 1)
        self.have_remote = port != 0
        self.latched = False
        pthread_mutex_unlock(&self.lock)

    def set_direction(self, bint send, bint receive):
        pthread_mutex_lock(&self.lock)
        if send and not self.send_on:
            self.marker_next = 1
        self.send_on = send
        self.recv_on = receive
        pthread_mutex_unlock(&self.lock)

    def send_dtmf(self, str digits) -> int:
        """Queue RFC 4733 events; returns how many were queued (unknown characters skipped)."""
        cdef int queued = 0
        pthread_mutex_lock(&self.lock)
        for ch in digits.upper():
            idx = DTMF_EVENTS.find(ch)
            if idx >= 0 and self.dq_count < MAX_DIGITS:
                self.dq[(self.dq_head + self.dq_count) % MAX_DIGITS] = idx
                self.dq_count += 1
                queued += 1
        pthread_mutex_unlock(&self.lock)
        return queued

    def received_digits(self) -> str:
        """Digits received since the last call."""
        pthread_mutex_lock(&self.lock)
        out = "".join(DTMF_EVENTS[self.din[i]] for i in range(self.din_count))
        self.din_count = 0
        pthread_mutex_unlock(&self.lock)
        return out

    def stop(self):
        self.stop_flag = True

    def stats(self) -> dict:
        cdef Stats s = self.st
        cdef uint32_t ext_max = self.cycles + self.max_seq
        cdef int64_t expected = (<int64_t>ext_max - self.base_seq + 1) if self.seq_init else 0
        cdef int64_t lost = expected - <int64_t>s.received if self.seq_init else 0
        return {
            "sent": s.sent, "sent_octets": s.sent_octets, "received": s.received,
            "received_octets": s.received_octets, "lost": max(lost, 0), "late": self.jb.late,
            "duplicates": self.jb.duplicates, "reordered": self.jb.reordered,
            "jitter_ms": round(s.jitter / 8.0, 3),
            "concealed_ms": s.concealed_frames * self.ptime_ms,
            "buffer_depth_ms": self.jb.depth_c() * self.ptime_ms,
            "buffer_target_ms": self.jb.target * self.ptime_ms,
            "malformed": s.malformed, "wrong_payload_type": s.wrong_pt,
            "wrong_source": s.wrong_source, "resyncs": self.jb.resyncs,
            "dtmf_sent": s.dtmf_sent, "dtmf_received": s.dtmf_received,
            "auth_failures": s.auth_failures, "replays": s.replays,
            "unprotect_errors": s.unprotect_errors, "protect_errors": s.protect_errors,
            "rtcp_refused": s.rtcp_refused,
            "rtcp_sent": s.rtcp_sent, "rtcp_received": s.rtcp_received,
            "source_underruns": s.source_underruns, "sink_overruns": self.sink.overruns,
            "ticks": s.ticks, "late_wakeups": s.late_wakeups,
            "max_wakeup_late_us": s.max_wakeup_late_ns / 1000.0,
            "mean_wakeup_late_us": (s.sum_wakeup_late_ns / 1000.0 / s.ticks) if s.ticks else 0.0,
            "realtime": bool(self.realtime_ok), "timestamp": self.ts, "sequence": self.seq,
            "ssrc": self.ssrc,
        }

    # ------------------------------------------------------------------ the loop
    def run(self, int rt_priority=0):
        """Run until stop(); ``rt_priority`` > 0 asks for SCHED_FIFO (kept if refused)."""
        cdef sched_param sp
        if rt_priority > 0:
            sp.sched_priority = rt_priority
            self.realtime_ok = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0
        with nogil:
            self._loop()
            self._send_rtcp(1)

    cdef void _loop(self) noexcept nogil:
        cdef int64_t period = <int64_t>self.ptime_ms * 1000000
        cdef int64_t deadline = _now_ns() + period
        cdef int64_t late
        cdef timespec t
        self.next_rtcp_ns = deadline + RTCP_INTERVAL_NS // 2
        cdef int64_t wake
        while not self.stop_flag:
            # sleep to the deadline (or spin_us before it, then spin: hides idle-exit latency)
            wake = deadline - <int64_t>self.spin_us * 1000
            t.tv_sec = wake // 1000000000
            t.tv_nsec = wake % 1000000000
            while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR:
                pass
            while self.spin_us and _now_ns() < deadline:
                pass
            late = _now_ns() - deadline
            self.st.ticks += 1
            self.st.sum_wakeup_late_ns += late
            if <uint64_t>late > self.st.max_wakeup_late_ns:
                self.st.max_wakeup_late_ns = late
            if late > 1000000:
                self.st.late_wakeups += 1
            self._tick(deadline)
            deadline += period
            if _now_ns() - deadline > 10 * period:  # suspended for long: do not burst
                deadline = _now_ns() + period

    cdef void _tick(self, int64_t now_ns) noexcept nogil:
        self._receive(now_ns)
        self._send_frame()
        self._playout()
        if now_ns >= self.next_rtcp_ns:
            self._send_rtcp(0)
            # 5 s, varied by +-25 % from the sequence number (RFC 3550 §6.2 randomisation)
            self.next_rtcp_ns = now_ns + RTCP_INTERVAL_NS * 3 // 4 + \
                (RTCP_INTERVAL_NS // 2) * (self.seq % 101) // 100

    cdef void _receive(self, int64_t now_ns) noexcept nogil:
        cdef uint8_t buf[1500]
        cdef uint8_t control[128]
        cdef sockaddr_in src
        cdef socklen_t slen
        cdef ssize_t n
        cdef RtpHeader h
        cdef msghdr msg
        cdef iovec iov
        cdef cmsghdr *cm
        cdef timespec *stamp
        cdef timespec wall
        cdef int64_t arrival_ns
        cdef int rc
        while True:
            iov.iov_base = buf
            iov.iov_len = sizeof(buf)
            memset(&msg, 0, sizeof(msg))
            msg.msg_name = &src
            msg.msg_namelen = sizeof(src)
            msg.msg_iov = &iov
            msg.msg_iovlen = 1
            msg.msg_control = control
            msg.msg_controllen = sizeof(control)
            n = recvmsg(self.rtp_fd, &msg, MSG_DONTWAIT)
            if n < 0:
                break
            arrival_ns = 0
            cm = CMSG_FIRSTHDR(&msg)
            while cm != NULL:
                if cm.cmsg_level == SOL_SOCKET and cm.cmsg_type == SCM_TIMESTAMPNS:
                    stamp = <timespec *>CMSG_DATA(cm)
                    arrival_ns = <int64_t>stamp.tv_sec * 1000000000 + stamp.tv_nsec
                cm = CMSG_NXTHDR(&msg, cm)
            if arrival_ns == 0:
                clock_gettime(CLOCK_REALTIME, &wall)
                arrival_ns = <int64_t>wall.tv_sec * 1000000000 + wall.tv_nsec
            if self.xform is not None:
                # address first (no crypto spent on strangers), then authenticity; latching
                # below happens only for a packet that authenticated
                pthread_mutex_lock(&self.lock)
                rc = self._may_come_from(&src)
                pthread_mutex_unlock(&self.lock)
                if not rc:
                    self.st.wrong_source += 1
                    continue
                rc = self.xform.unprotect_rtp_c(buf, <int>n)
                if rc < 0:
                    self._count_refused(rc)
                    continue
                n = rc
            if _rtp_parse(buf, <int>n, &h) != 0:
                self.st.malformed += 1
                continue
            pthread_mutex_lock(&self.lock)
            if not self._source_ok(&src):
                pthread_mutex_unlock(&self.lock)
                self.st.wrong_source += 1
                continue
            pthread_mutex_unlock(&self.lock)
            if not self.recv_on:
                continue
            if h.pt == self.dtmf_payload_type:
                self._receive_event(buf + h.offset, h.length, h.ts)
                self._count(&h, arrival_ns, <int>n)
            elif h.pt == self.payload_type:
                self._count(&h, arrival_ns, <int>n)
                self.jb.put_c(h.ts, h.seq, h.ssrc, buf + h.offset, h.length)
            elif h.pt == 13:  # comfort noise: accepted, not played
                self._count(&h, arrival_ns, <int>n)
            else:
                self.st.wrong_pt += 1
        while True:  # RTCP from the peer: counted; SR timestamps kept for LSR/DLSR
            slen = sizeof(src)
            n = recvfrom(self.rtcp_fd, buf, sizeof(buf), MSG_DONTWAIT, <sockaddr *>&src, &slen)
            if n < 0:
                break
            pthread_mutex_lock(&self.lock)
            if not self.have_remote or src.sin_addr.s_addr != self.remote_rtcp.sin_addr.s_addr \
                    or src.sin_port != self.remote_rtcp.sin_port:
                pthread_mutex_unlock(&self.lock)
                self.st.wrong_source += 1  # RTCP only from the negotiated peer's RTCP port
                continue
            pthread_mutex_unlock(&self.lock)
            if self.xform is not None:
                rc = self.xform.unprotect_rtcp_c(buf, <int>n)
                if rc < 0:
                    self.st.rtcp_refused += 1
                    continue
                n = rc
            if n >= 8 and (buf[0] >> 6) == 2 and buf[1] >= 200 and buf[1] <= 204:
                self.st.rtcp_received += 1
                if buf[1] == 200 and n >= 20:
                    self.lsr = _rd32(buf + 10)
                    self.lsr_arrival_ns = now_ns
            else:
                self.st.malformed += 1

    cdef void _count_refused(self, int rc) noexcept nogil:
        """An RTP packet the transform refused: counted by reason."""
        if rc == XF_AUTH:
            self.st.auth_failures += 1
        elif rc == XF_REPLAY:
            self.st.replays += 1
        else:
            self.st.unprotect_errors += 1

    cdef bint _may_come_from(self, sockaddr_in *src) noexcept nogil:
        """What _source_ok would accept, without latching (called with the lock held)."""
        if self.have_remote and src.sin_addr.s_addr == self.remote.sin_addr.s_addr and \
                src.sin_port == self.remote.sin_port:
            return True
        return (self.latch and not self.latched) or not self.have_remote

    cdef int _protect(self, uint8_t *pkt, int n, int cap, bint rtcp) noexcept nogil:
        """Run the transform on an outgoing packet: its new length, or -1 (counted)."""
        if rtcp:
            n = self.xform.protect_rtcp_c(pkt, n, cap)
        else:
            n = self.xform.protect_rtp_c(pkt, n, cap)
        if n < 0:
            self.st.protect_errors += 1
            return -1
        return n

    cdef bint _source_ok(self, sockaddr_in *src) noexcept nogil:
        """Symmetric RTP: accept the SDP address; with latching, move to the first sender."""
        if self.have_remote and src.sin_addr.s_addr == self.remote.sin_addr.s_addr and \
                src.sin_port == self.remote.sin_port:
            return True
        if self.latch and not self.latched:
            self.remote.sin_addr = src.sin_addr
            self.remote.sin_port = src.sin_port
            self.remote.sin_family = AF_INET
            self.remote_rtcp.sin_addr = src.sin_addr
            self.remote_rtcp.sin_port = htons(ntohs(src.sin_port) + 1)
            self.have_remote = True
            self.latched = True
            return True
        return not self.have_remote

    cdef void _count(self, RtpHeader *h, int64_t arrival_ns, int n) noexcept nogil:
        cdef double arrival, transit, d
        cdef uint16_t udelta
        self.st.received += 1
        self.st.received_octets += h.length
        if not self.seq_init or h.ssrc != self.remote_ssrc:
            self.seq_init = True
            self.remote_ssrc = h.ssrc
            self.base_seq = h.seq
            self.max_seq = h.seq
            self.cycles = 0
            self.have_transit = False
            self.st.received = 1
        else:
            udelta = h.seq - self.max_seq
            if udelta < 3000:
                if h.seq < self.max_seq:
                    self.cycles += 65536
                self.max_seq = h.seq
        arrival = arrival_ns * 8e-6  # in 8 kHz timestamp units
        transit = arrival - h.ts
        if self.have_transit:
            d = transit - self.last_transit
            if d < 0:
                d = -d
            self.st.jitter += (d - self.st.jitter) / 16.0
        self.last_transit = transit
        self.have_transit = True

    cdef void _receive_event(self, const uint8_t *p, int n, uint32_t ts) noexcept nogil:
        """RFC 4733: one digit per event timestamp, whatever the marker or end bits say."""
        cdef uint64_t wake = 1
        if n < 4 or p[0] > 15:
            self.st.malformed += 1
            return
        if self.have_event and ts == self.last_event_ts:
            return
        self.have_event = True
        self.last_event_ts = ts
        self.st.dtmf_received += 1
        pthread_mutex_lock(&self.lock)
        if self.din_count < MAX_DIGITS:
            self.din[self.din_count] = p[0]
            self.din_count += 1
        pthread_mutex_unlock(&self.lock)
        if self.notify_fd >= 0:
            write(self.notify_fd, &wake, 8)  # an eventfd counter (or 8 bytes into a pipe)

    cdef void _send_frame(self) noexcept nogil:
        cdef uint8_t pkt[12 + MAX_FRAME + TRANSFORM_TRAILER_MAX]
        cdef int16_t pcm[MAX_FRAME]
        cdef int got, fs = self.frame_samples
        cdef bint send
        got = self.source.pull(pcm, fs)
        if got < fs:
            if self.send_on:
                self.st.source_underruns += 1
            memset(&pcm[got], 0, (fs - got) * sizeof(int16_t))
        if self.proc is not None:
            self.proc.capture_c(pcm, fs, self.source.level())
        if self.tx_gain_q12 != 4096:
            _scale(pcm, fs, self.tx_gain_q12)
        pthread_mutex_lock(&self.lock)
        send = self.send_on and self.have_remote
        if self.ev_code < 0 and self.ev_gap == 0 and self.dq_count > 0:
            self.ev_code = self.dq[self.dq_head]
            self.dq_head = (self.dq_head + 1) % MAX_DIGITS
            self.dq_count -= 1
            self.ev_ts = self.ts
            self.ev_frames = (self.dtmf_duration_ms + self.ptime_ms - 1) // self.ptime_ms
            self.ev_sent = 0
            self.ev_end_sent = 0
        pthread_mutex_unlock(&self.lock)
        if self.ev_code >= 0:
            if send:
                self._send_event()
            else:
                self.ev_code = -1
        elif self.ev_gap > 0:
            self.ev_gap -= 1  # a short pause of audio between digits
            if send:
                self._send_audio(pkt, pcm)
        elif send:
            self._send_audio(pkt, pcm)
        else:
            self.marker_next = 1
        self.ts += fs  # the clock runs whether or not a packet leaves

    cdef void _send_audio(self, uint8_t *pkt, int16_t *pcm) noexcept nogil:
        cdef int fs = self.frame_samples
        cdef int n = 12 + fs
        _rtp_header(pkt, self.payload_type, self.marker_next, self.seq, self.ts, self.ssrc)
        _encode(pcm, pkt + 12, fs, self.law)
        if self.xform is not None:
            n = self._protect(pkt, n, 12 + MAX_FRAME + TRANSFORM_TRAILER_MAX, False)
        if n > 0 and sendto(self.rtp_fd, pkt, n, 0, <sockaddr *>&self.remote,
                            sizeof(self.remote)) > 0:
            self.st.sent += 1
            self.st.sent_octets += fs
        self.marker_next = 0
        self.seq += 1

    cdef void _send_event(self) noexcept nogil:
        """Event packets share the event's start timestamp; the end goes three times."""
        cdef uint8_t pkt[16 + TRANSFORM_TRAILER_MAX]
        cdef int i, n, copies = 1
        cdef bint end
        cdef uint32_t duration
        self.ev_sent += 1
        end = self.ev_sent >= self.ev_frames
        duration = self.ev_sent * self.frame_samples
        if end:
            copies = 3
        for i in range(copies):
            _rtp_header(pkt, self.dtmf_payload_type, self.ev_sent == 1 and i == 0, self.seq,
                        self.ev_ts, self.ssrc)
            pkt[12] = self.ev_code
            pkt[13] = (0x80 if end else 0) | 10
            _wr16(pkt + 14, <uint16_t>duration)
            n = 16
            if self.xform is not None:
                n = self._protect(pkt, n, 16 + TRANSFORM_TRAILER_MAX, False)
            if n > 0 and sendto(self.rtp_fd, pkt, n, 0, <sockaddr *>&self.remote,
                                sizeof(self.remote)) > 0:
                self.st.sent += 1
                self.st.sent_octets += 4
            self.seq += 1
        if end:
            self.st.dtmf_sent += 1
            self.ev_code = -1
            self.ev_gap = 2
            self.marker_next = 1

    cdef void _playout(self) noexcept nogil:
        cdef uint8_t enc[MAX_FRAME]
        cdef int16_t pcm[MAX_FRAME]
        cdef int i, fs = self.frame_samples
        cdef int n = self.jb.pop_c(enc) if self.recv_on else 0
        if n == fs:
            _decode(enc, pcm, fs, self.law)
            memcpy(self.last_pcm, pcm, fs * sizeof(int16_t))
            self.have_last = True
            self.conceal_run = 0
        elif self.have_last and self.conceal_run < 5:
            # repeat the last frame, fading out over 5 frames (G.711 Appendix I in spirit)
            self.conceal_run += 1
            for i in range(fs):
                pcm[i] = <int16_t>(self.last_pcm[i] * (5 - self.conceal_run) // 5)
            self.st.concealed_frames += 1
        else:
            if self.have_last:
                self.st.concealed_frames += 1
            memset(pcm, 0, fs * sizeof(int16_t))
        if self.rx_gain_q12 != 4096:
            _scale(pcm, fs, self.rx_gain_q12)
        if self.proc is not None:
            self.proc.playback_c(pcm, fs, self.sink.level())
        self.sink.push(pcm, fs)

    cdef void _send_rtcp(self, bint bye) noexcept nogil:
        cdef uint8_t pkt[256]
        cdef int off = 0, rb = 0, words, clen, i
        cdef timespec wall
        cdef uint64_t ntp
        cdef uint32_t ext_max, expected, expected_interval, received_interval, lost_interval
        cdef int32_t lost
        cdef uint8_t fraction = 0
        cdef uint32_t dlsr = 0
        if not self.have_remote:
            return
        clock_gettime(CLOCK_REALTIME, &wall)
        ntp = ((<uint64_t>wall.tv_sec + 2208988800ULL) << 32) | \
            ((<uint64_t>wall.tv_nsec << 32) // 1000000000ULL)
        rb = 1 if self.seq_init else 0
        pkt[0] = 0x80 | rb
        pkt[1] = 200  # SR
        _wr16(pkt + 2, <uint16_t>(6 + 6 * rb))
        _wr32(pkt + 4, self.ssrc)
        _wr32(pkt + 8, <uint32_t>(ntp >> 32))
        _wr32(pkt + 12, <uint32_t>ntp)
        _wr32(pkt + 16, self.ts)
        _wr32(pkt + 20, <uint32_t>self.st.sent)
        _wr32(pkt + 24, <uint32_t>self.st.sent_octets)
        off = 28
        if rb:
            ext_max = self.cycles + self.max_seq
            expected = ext_max - self.base_seq + 1
            lost = <int32_t>(expected - <uint32_t>self.st.received)
            expected_interval = expected - self.expected_prior
            received_interval = <uint32_t>self.st.received - self.received_prior
            self.expected_prior = expected
            self.received_prior = <uint32_t>self.st.received
            if expected_interval > received_interval and expected_interval:
                lost_interval = expected_interval - received_interval
                fraction = <uint8_t>((lost_interval << 8) // expected_interval)
            if self.lsr_arrival_ns:
                dlsr = <uint32_t>((_now_ns() - self.lsr_arrival_ns) * 65536 // 1000000000)
            _wr32(pkt + off, self.remote_ssrc)
            pkt[off + 4] = fraction
            if lost > 0x7FFFFF:
                lost = 0x7FFFFF
            if lost < -0x800000:
                lost = -0x800000
            pkt[off + 5] = (lost >> 16) & 0xFF
            pkt[off + 6] = (lost >> 8) & 0xFF
            pkt[off + 7] = lost & 0xFF
            _wr32(pkt + off + 8, ext_max)
            _wr32(pkt + off + 12, <uint32_t>self.st.jitter)
            _wr32(pkt + off + 16, self.lsr)
            _wr32(pkt + off + 20, dlsr)
            off += 24
        # SDES with CNAME, padded to a 32-bit boundary
        clen = self.cname_len
        words = (4 + 2 + clen + 1 + 3) // 4
        pkt[off] = 0x81
        pkt[off + 1] = 202
        _wr16(pkt + off + 2, <uint16_t>words)
        _wr32(pkt + off + 4, self.ssrc)
        pkt[off + 8] = 1
        pkt[off + 9] = clen
        memcpy(pkt + off + 10, self.cname, clen)
        for i in range(off + 10 + clen, off + 4 + 4 * words):
            pkt[i] = 0
        off += 4 + 4 * words
        if bye:
            pkt[off] = 0x81
            pkt[off + 1] = 203
            _wr16(pkt + off + 2, 1)
            _wr32(pkt + off + 4, self.ssrc)
            off += 8
        if self.xform is not None:
            off = self._protect(pkt, off, sizeof(pkt), True)
        if off > 0 and sendto(self.rtcp_fd, pkt, off, 0, <sockaddr *>&self.remote_rtcp,
                              sizeof(self.remote_rtcp)) > 0:
            self.st.rtcp_sent += 1
