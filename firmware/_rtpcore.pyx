# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The media stream's I/O shell: the GIL-free 20 ms thread around the sans-I/O media core.

Owns what touches the outside each packet period: the CLOCK_MONOTONIC deadline loop
(``clock_nanosleep(TIMER_ABSTIME)``, optional SCHED_FIFO) and when in each period the work is
done — at the deadline while it is cheap, else a measured lead before it, so that the packet
due at a deadline leaves at it whatever the processing cost (the split tick; its figures in
``stats()``): sent by a second wake-up at the deadline, or — where the caller says the kernel
paces (``use_kernel_pacing``: the fq qdisc on the way out) — handed over at once stamped with
its departure time (``SO_TXTIME``), one wake-up a period; ``recvmsg``/``recvfrom`` with kernel
arrival timestamps and ``sendto``/``sendmsg`` on file descriptors it is given, the peer's address
(symmetric RTP, latching), the mutex-guarded PCM FIFOs shared with Python audio threads, the
loop-side stand-ins for a source and a sink that need no Python (a PCM table cycled as the
captured signal, played frames discarded: a tone or silence into a null sink runs with this
thread alone), and the two hooks between the core and the I/O: the packet transform
(``firmware.core._transform``; SRTP is one) protects what leaves and unprotects what arrives, its
refusals counted; the capture processor (``firmware.core._processor``; echo cancellation is one) sees
every frame played and cleans every frame captured before gain and encoding. Where a sound
card's clock is on the other side of a FIFO, the drift compensator (``firmware.core._drift``)
resamples between the FIFO and the loop so the card's rate and the network's meet. When both
sides of a call are one sound card (or two), the loop drives it itself through
``firmware.core._card`` (the card loop): each wake-up is a capture period arriving, the tick
runs in it and the frame to play goes to the card in the same wake-up — no FIFO, no Python
thread; the packet leaves at once, or, when a capture processor works between the period and the
packet (or the kernel paces), at the card clock's time (the periods' arrivals smoothed) plus a
measured lead, so that neither the work nor the card's delivery jitter reaches the wire; the
card's clock is then the loop's, met with the network's by whole-frame slips at pauses
(``ClockSlip``, made by the jitter buffer), and the
RTP clock falls back to CLOCK_MONOTONIC (silence sent) for a period that does not come or a
card that went, until Python hands over a reopened one (an eventfd says when). Everything
else — RTP, RTCP, DTMF, jitter buffer, concealment, gain — is ``firmware.core._mediacore.MediaCore``,
which this module drives with (now, packets, PCM). Also the stable import point of the codec and
RTP functions.
Knows nothing about SIP, SDP, sockets' creation, ciphers, echo cancellation, ALSA's API (the
card unit owns it), qdiscs (``firmware.media.pacing`` decides) or files.
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, free
from libc.errno cimport errno, EINTR, ETIMEDOUT
from posix.unistd cimport write as fd_write
from posix.time cimport (clock_gettime, clock_nanosleep, timespec, CLOCK_MONOTONIC,
                         CLOCK_REALTIME, CLOCK_THREAD_CPUTIME_ID)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
import sys
from firmware.core._transform cimport PacketTransform, TRANSFORM_TRAILER_MAX, XF_AUTH, XF_REPLAY
from firmware.core._processor cimport CaptureProcessor
from firmware.core._rtp cimport RtpHeader, rtp_parse_c
from firmware.core._jitter cimport MAX_FRAME
from firmware.core._mediacore cimport MediaCore, OUTBOX, PACKET_MAX
from firmware.core._drift cimport ClockSlip, DriftCompensator, RS_BUF
from firmware.core._card cimport Card, CARD_READY, CARD_TIMEOUT, CARD_GONE
from firmware.core._conceal cimport Concealer
from firmware.address import ipv4

# the stable public names (callers import them from here)
from firmware.core._g711 import ALAW, ULAW, decode_alaw, decode_ulaw, encode_alaw, encode_ulaw
from firmware.core._rtp import RTP_ERRORS, rtp_pack, rtp_parse
from firmware.core._jitter import (JB_DUPLICATE, JB_LATE, JB_OK, JB_RESYNC, JB_TOO_EARLY,
                              JitterBuffer)
from firmware.core._dtmf import DTMF_EVENTS
from firmware.core._mediacore import MediaCore

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
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int recvmmsg(int, mmsghdr *, unsigned int, int, timespec *)
    ssize_t sendto(int, const void *, size_t, int, const sockaddr *, socklen_t)
    ssize_t sendmsg(int, const msghdr *, int)
    int setsockopt(int, int, int, const void *, socklen_t)
    size_t CMSG_SPACE(size_t)
    size_t CMSG_LEN(size_t)
    int MSG_DONTWAIT
    int SOL_SOCKET
    int SO_TIMESTAMPNS
    int SCM_TIMESTAMPNS

# the kernel sends a datagram at the time it carries (SO_TXTIME; the fq qdisc holds it till
# then). Defined here: older libc headers lack them (Linux's values, since 4.19)
cdef extern from *:
    """
    #ifndef SO_TXTIME
    #define SO_TXTIME 61
    #endif
    #ifndef SCM_TXTIME
    #define SCM_TXTIME SO_TXTIME
    #endif
    struct intercom_sock_txtime { int clockid; unsigned int flags; };
    """
    int SO_TXTIME
    int SCM_TXTIME
    struct intercom_sock_txtime:
        int clockid
        unsigned int flags

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

# --------------------------------------------------------------------------------- FIFO
cdef bint _LITTLE_ENDIAN = sys.byteorder == "little"  # PCM bytes are little-endian


cdef inline int64_t _mono_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef class PcmFifo:
    """Mutex-guarded ring of 16-bit samples between a Python audio thread and the loop.

    Remembers when samples last went in and came out (CLOCK_MONOTONIC): the sound card's side
    of each FIFO tells the drift control where the card is between its periods.
    """

    cdef int16_t *buf
    cdef int cap, head, count
    cdef pthread_mutex_t lock
    cdef public uint64_t overruns
    cdef public int64_t last_push_ns, last_pull_ns

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
        pthread_mutex_lock(&self.lock)
        n = self._push_locked(<const uint8_t *>src, n)
        pthread_mutex_unlock(&self.lock)
        return n

    cdef int _push_locked(self, const uint8_t *src, int n) noexcept nogil:
        """``n`` native-order samples at ``src`` (any alignment) in, with the lock held."""
        cdef int drop, tail, first
        if n > self.cap:
            self.overruns += n - self.cap
            src += 2 * (n - self.cap)
            n = self.cap
        drop = self.count + n - self.cap
        if drop > 0:
            self.head = (self.head + drop) % self.cap
            self.count -= drop
            self.overruns += drop
        # at most two runs of the ring: the one up to its end, then the one from its start
        tail = (self.head + self.count) % self.cap
        first = self.cap - tail
        if first > n:
            first = n
        memcpy(&self.buf[tail], src, first * sizeof(int16_t))
        memcpy(&self.buf[0], src + 2 * first, (n - first) * sizeof(int16_t))
        self.count += n
        if n > 0:
            self.last_push_ns = _mono_ns()
        return n

    cdef int pull(self, int16_t *dst, int n) noexcept nogil:
        pthread_mutex_lock(&self.lock)
        n = self._pull_locked(<uint8_t *>dst, n)
        pthread_mutex_unlock(&self.lock)
        return n

    cdef int _pull_locked(self, uint8_t *dst, int n) noexcept nogil:
        """Up to ``n`` native-order samples out to ``dst`` (any alignment), with the lock held."""
        cdef int got = n if n < self.count else self.count
        cdef int first = self.cap - self.head
        if first > got:
            first = got
        memcpy(dst, &self.buf[self.head], first * sizeof(int16_t))
        memcpy(dst + 2 * first, &self.buf[0], (got - first) * sizeof(int16_t))
        self.head = (self.head + got) % self.cap
        self.count -= got
        if got > 0:
            self.last_pull_ns = _mono_ns()
        return got

    def write(self, pcm, long long now_ns=-1) -> int:
        """Add little-endian 16-bit PCM bytes; returns samples written. ``now_ns`` (a virtual
        clock, for tests) stamps the write instead of CLOCK_MONOTONIC."""
        cdef const uint8_t[::1] mv = pcm
        cdef int n = mv.shape[0] // 2
        cdef int16_t *tmp
        cdef int i
        if n == 0:
            return 0
        if _LITTLE_ENDIAN:  # the wire order is the host's: straight into the ring
            with nogil:
                pthread_mutex_lock(&self.lock)
                self._push_locked(&mv[0], n)
                pthread_mutex_unlock(&self.lock)
        else:
            tmp = <int16_t *>malloc(n * sizeof(int16_t))
            if tmp == NULL:
                raise MemoryError()
            for i in range(n):
                tmp[i] = <int16_t>(mv[2 * i] | (mv[2 * i + 1] << 8))
            with nogil:
                self.push(tmp, n)
            free(tmp)
        if now_ns >= 0:
            self.last_push_ns = now_ns
        return n

    def read(self, int max_samples=-1, long long now_ns=-1) -> bytes:
        """Take up to ``max_samples`` (all when -1) as little-endian PCM bytes; ``now_ns`` as
        for ``write``."""
        if max_samples < 0 or max_samples > self.cap:
            max_samples = self.cap  # never more than the ring holds
        cdef int want, got, i
        cdef uint16_t v
        cdef bytes out
        cdef uint8_t *dst
        # sized under the lock, filled under it: one copy, no scratch buffer
        pthread_mutex_lock(&self.lock)
        want = max_samples if max_samples < self.count else self.count
        pthread_mutex_unlock(&self.lock)
        out = PyBytes_FromStringAndSize(NULL, want * 2)
        dst = <uint8_t *>PyBytes_AS_STRING(out)
        with nogil:
            pthread_mutex_lock(&self.lock)
            got = self._pull_locked(dst, want)
            pthread_mutex_unlock(&self.lock)
        if got < want:  # another reader took some meanwhile
            out = out[:got * 2]
            dst = <uint8_t *>PyBytes_AS_STRING(out)
        if not _LITTLE_ENDIAN:
            for i in range(got):
                v = (<uint16_t *>dst)[i]
                dst[2 * i] = v & 0xFF
                dst[2 * i + 1] = v >> 8
        if now_ns >= 0 and got > 0:
            self.last_pull_ns = now_ns
        return out

    cdef int level(self) noexcept nogil:
        cdef int n
        pthread_mutex_lock(&self.lock)
        n = self.count
        pthread_mutex_unlock(&self.lock)
        return n

    def __len__(self):
        return self.count


# --------------------------------------------------------------------------------- the shell
cdef enum:
    RECV_BATCH = 4  # datagrams one recvmmsg takes: fewer than this means the socket is empty
    HIST = 391     # buckets: 10 µs wide below 1 ms, 100 µs wide below 30 ms, then one for the rest
    WINDOW = 64    # ticks the lead looks back on (1.28 s at 20 ms)

# the CPU the tick's work (receive, capture, processor, core, playback, protect) costs before
# the send: above SPLIT_ON_NS at its worst in the window the loop prepares each packet ahead of
# its deadline and sends it at the deadline; below SPLIT_OFF_NS it goes back to one wake-up per
# period (CPU time, not wall time: being preempted is no reason for a second wake-up)
cdef int64_t SPLIT_ON_NS = 150000
cdef int64_t SPLIT_OFF_NS = 60000
cdef int64_t LEAD_SLACK_NS = 100000  # on top of the worst (wake-up lateness + work) seen, +25 %
# the least lead once split: the early wake-up may itself come late (on this class of VM a wake-up
# from idle takes 0.4-1 ms now and then), and a lead it overruns makes a late packet
cdef int64_t LEAD_MIN_NS = 1000000
cdef int64_t LATE_NS = 1000000       # a wake-up or a send this far past its time is counted


cdef struct IoStats:
    uint64_t wrong_source, ticks, late_wakeups
    uint64_t auth_failures, replays, unprotect_errors, protect_errors  # the packet transform
    uint64_t rtcp_refused  # RTCP the transform refused, whatever the reason
    uint64_t send_errors   # sendto refused by the kernel
    uint64_t max_wakeup_late_ns
    int64_t sum_wakeup_late_ns
    uint64_t late_sends    # packets that left LATE_NS or more after their deadline
    int64_t max_work_ns, max_send_lag_ns
    uint32_t work_hist[HIST]      # the tick's work before the send, per tick
    uint32_t send_lag_hist[HIST]  # deadline -> sendto, per tick that sent


cdef struct CardStats:
    uint64_t timeouts      # capture periods that did not come by the deadline (silent ticks)
    uint64_t silent_ticks  # ticks on the monotonic clock without a captured period
    uint64_t gone, adopted # times the card went; cards adopted after it did
    uint64_t xruns_capture, xruns_playback, playback_dropped  # of cards given up
    uint64_t held_ticks    # ticks held back to the monotonic pace (an unpaced device)
    uint64_t late_periods  # periods that came after their slot was ticked silent (dropped)
    uint64_t trimmed       # samples to play dropped to keep the playback queue at its level
    uint64_t relocks       # times the card clock was taken afresh from a period's arrival
    int quiet              # consecutive ticks without a period
    int owed               # silent ticks whose periods may still come late
    int over               # consecutive ticks with the playback queue above its level
    int error              # the errno that made the card go
    uint32_t jitter_hist[HIST]  # |a period's arrival - the card clock's prediction|


# the card loop: a capture period may come this late after its monotonic deadline before the
# loop ticks without it; this many missed in a row and the card is gone. Periods that come
# faster than the network's pace wait (a device that is not paced, such as alsa-lib's file
# plugin): the loop may run CARD_BURST periods ahead (a card that delivers in bursts), beyond
# that at most 1/CARD_FAST faster than the monotonic clock (far more than any crystal is off)
cdef int64_t CARD_GRACE_NS = 5000000
cdef int CARD_GONE_AFTER = 50
cdef int CARD_BURST = 3
cdef int CARD_FAST = 200
# one card: the playback queue is trimmed back to its level only when it has stood above it for
# this many ticks in a row. A moment above is no backlog: alsa-lib's jack plugin runs capture
# and playback as two jack clients, and the loop, woken by the capture side, can read the
# playback queue before that cycle took its period (10 ms more, for that instant: a trim of
# 5 ms of speech, in CI); a card's two DMA pointers move at their own interrupts likewise
cdef int CARD_TRIM_AFTER = 3
# the card clock the paced send follows (a second-order loop on the periods' arrivals, gains
# 1/8 and 1/128: damped, it follows a card's few hundred ppm and averages out the jitter of its
# deliveries; an arrival's error is clipped to CARD_CLIP_NS first). A period further than
# CARD_SNAP_NS from the clock's prediction (a stall, an xrun, a new card) takes the clock
# afresh; the clock's period stays within 1/200 of the nominal one.
# The paced send's lead falls by at most LEAD_FALL_NS a tick (each change is an interval error
# on the wire) and rises at once (a packet later than its lead leaves late, counted)
cdef int64_t CARD_SNAP_NS = 2000000
cdef int64_t CARD_CLIP_NS = 250000  # an arrival's error counts up to this (a crystal: ~4 µs)
cdef int64_t LEAD_FALL_NS = 10000


cdef inline int _bucket(int64_t ns) noexcept nogil:
    cdef int64_t us = ns // 1000
    if us < 0:
        return 0
    if us < 1000:
        return <int>(us // 10)
    if us < 30000:
        return 100 + <int>((us - 1000) // 100)
    return HIST - 1


cdef double _bucket_top_us(int i) noexcept nogil:
    """The upper edge of bucket ``i`` in µs (the last bucket has none: -1)."""
    if i < 100:
        return (i + 1) * 10.0
    if i < HIST - 1:
        return 1000.0 + (i - 99) * 100.0
    return -1.0


cdef double _quantile_us(const uint32_t *hist, double q, int64_t max_ns) noexcept nogil:
    """The ``q`` quantile of a histogram as its bucket's upper edge (never above the maximum
    seen), 0 when empty."""
    cdef uint64_t total = 0, seen = 0
    cdef int i
    cdef double top
    for i in range(HIST):
        total += hist[i]
    if total == 0:
        return 0.0
    for i in range(HIST):
        seen += hist[i]
        if seen >= q * total:
            top = _bucket_top_us(i)
            if top < 0 or top > max_ns / 1000.0:
                return max_ns / 1000.0
            return top
    return max_ns / 1000.0


cdef inline int64_t _lead_for(int64_t worst, int64_t period) noexcept nogil:
    """How far ahead of its send a packet is prepared, for the worst need seen: +25 %
    + LEAD_SLACK_NS, within [LEAD_MIN_NS, 3/4 of the period]."""
    cdef int64_t lead = worst + worst // 4 + LEAD_SLACK_NS
    if lead < LEAD_MIN_NS:
        return LEAD_MIN_NS
    if lead > period * 3 // 4:
        return period * 3 // 4
    return lead


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef inline int64_t _cpu_ns() noexcept nogil:
    """This thread's CPU time: what the tick's work costs, without what preempted it."""
    cdef timespec t
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef inline int64_t _wall_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_REALTIME, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef class MediaStream:
    """One full-duplex G.711 RTP stream with its RTCP, driven by ``run()`` on its own thread.

    The caller owns the sockets (two bound UDP sockets: RTP and RTCP) and passes their file
    descriptors; it feeds ``source`` with PCM to send and drains ``sink`` of PCM received.
    ``transform`` (optional) protects every packet before ``sendto`` and unprotects every
    datagram after ``recvmsg``; without one those steps are skipped. ``core`` is the sans-I/O
    stream this shell drives.
    """

    cdef int rtp_fd, rtcp_fd
    cdef sockaddr_in remote, remote_rtcp
    cdef bint stop_flag, latch, latched, have_remote
    cdef readonly MediaCore core
    cdef public PcmFifo source, sink
    cdef IoStats io
    cdef pthread_mutex_t lock  # the peer's address
    cdef public bint realtime_ok
    cdef public int spin_us
    cdef PacketTransform xform
    cdef CaptureProcessor proc
    cdef readonly DriftCompensator drift
    cdef int16_t *cycle  # captured audio taken from this table (owned), or NULL: the FIFO
    cdef int cycle_len, cycle_pos
    cdef public bint discard_playback  # played frames go nowhere instead of into the sink
    cdef bint ran
    # the split tick: the work ahead of the deadline by lead_ns, the send at the deadline
    cdef bint split
    cdef int64_t lead_ns
    cdef int64_t work_win[WINDOW]  # the tick's work in CPU time (ns)
    cdef int64_t need_win[WINDOW]  # wall time from when the wake-up was due to packet ready
    cdef int win_pos
    cdef int out_len[OUTBOX]  # the outbox's packets as protected (-1: refused, not sent)
    # the card loop: the sound card this loop drives itself (None: the FIFO paths)
    cdef Card card
    cdef Card card_next  # handed over by Python, adopted at the next tick
    cdef Card card_old   # given up by the loop, closed by Python (never on this thread)
    cdef bint card_pending, card_ok, card_separate
    cdef pthread_mutex_t card_lock  # card_next, card_old, card_pending
    cdef int card_fd  # eventfd: written when the card goes or comes back
    cdef ClockSlip slip
    cdef uint64_t slip_xruns  # the card's xruns when the slip clock last looked
    cdef CardStats cs
    # the card clock: when the period just ticked was due (0: not locked) and its period
    cdef int64_t clk, clk_per
    # the kernel sends each RTP packet at its time (SO_TXTIME on the RTP socket, the fq qdisc
    # on its way out): the loop hands it over ahead, with no second wake-up to send it
    cdef readonly bint kernel_pacing

    def __cinit__(self):
        pthread_mutex_init(&self.lock, NULL)
        pthread_mutex_init(&self.card_lock, NULL)
        self.cycle = NULL
        self.card_fd = -1

    def __dealloc__(self):
        pthread_mutex_destroy(&self.lock)
        pthread_mutex_destroy(&self.card_lock)
        if self.cycle != NULL:
            free(self.cycle)

    def __init__(self, int rtp_fd, int rtcp_fd, int payload_type=0, int ptime_ms=20,
                 int dtmf_payload_type=101, unsigned int ssrc=0, int seq=0,
                 unsigned int ts=0, bint latch=False, int jitter_target_ms=40,
                 int jitter_min_ms=0, int jitter_max_ms=200, str cname="intercom",
                 PacketTransform transform=None, CaptureProcessor processor=None,
                 Concealer concealer=None, int notify_fd=-1):
        self.core = MediaCore(payload_type, ptime_ms, dtmf_payload_type, ssrc, seq, ts,
                              jitter_target_ms, jitter_min_ms, jitter_max_ms, cname, concealer)
        self.core.dtmf_in.notify_fd = notify_fd
        self.rtp_fd = rtp_fd
        self.rtcp_fd = rtcp_fd
        cdef int one = 1
        # kernel receive timestamps: interarrival jitter from when packets really arrived,
        # not from when the loop woke up to read them
        setsockopt(rtp_fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one))
        self.latch = latch
        self.source = PcmFifo(8000)
        self.sink = PcmFifo(8000)
        memset(&self.io, 0, sizeof(IoStats))
        self.xform = transform
        self.proc = processor
        self.drift = DriftCompensator(self.core.frame_samples, False, False)

    def enable_drift_control(self, bint playback, bint capture) -> None:
        """Before ``run()``: match the sound card's clock on the sides where a card drains the
        sink FIFO (playback) or fills the source FIFO (capture)."""
        self.drift = DriftCompensator(self.core.frame_samples, playback, capture)

    def use_kernel_pacing(self) -> bool:
        """Before ``run()``: hand each RTP packet to the kernel as soon as it is ready, with its
        departure time (``SO_TXTIME``, CLOCK_MONOTONIC), instead of waking again to send it at
        that time. Only where the packets' way out holds them to their time (the ``fq`` qdisc;
        ``firmware.media.pacing`` decides): elsewhere they would leave early. The loop then
        prepares every packet ahead (the lead) in one wake-up a period, on the tone path and
        the card path alike, with or without a capture processor. False (and nothing changed)
        when the kernel refuses the option."""
        cdef intercom_sock_txtime opt
        if self.ran:
            raise RuntimeError("kernel pacing is chosen before run()")
        opt.clockid = CLOCK_MONOTONIC
        opt.flags = 0
        self.kernel_pacing = setsockopt(self.rtp_fd, SOL_SOCKET, SO_TXTIME, &opt,
                                        sizeof(opt)) == 0
        return self.kernel_pacing

    def use_card(self, Card card, int notify_fd=-1) -> None:
        """Before ``run()``: both sides are this sound card (or two: ``card``'s capture and
        playback PCMs). ``run()`` then runs the card loop: woken by each capture period, the
        period captured, the tick, the frame played and the packet sent in one wake-up (two
        with a capture processor: the packet waits for the card clock's time + the lead); no
        FIFO, no Python thread. ``notify_fd`` (an eventfd) is written when the card goes or comes
        back (``card_state``)."""
        if self.ran:
            raise RuntimeError("the card is given before run()")
        self.card = card
        self.card_ok = not card.gone
        self.card_fd = notify_fd
        self.slip = ClockSlip(self.core.frame_samples)
        # a second card's crystal is not the first's: its playback queue steers a resampler
        self.card_separate = card.capture_name != card.playback_name
        self.drift = DriftCompensator(self.core.frame_samples, self.card_separate, False)
        memset(&self.cs, 0, sizeof(CardStats))

    def offer_card(self, Card card) -> None:
        """A card reopened (by Python, off the loop) for the loop to adopt at its next tick; the
        one it replaces is left for ``retired_card()``."""
        if self.card is None:
            raise RuntimeError("not a card stream")
        pthread_mutex_lock(&self.card_lock)
        old = self.card_next
        self.card_next = card
        self.card_pending = True
        pthread_mutex_unlock(&self.card_lock)
        if old is not None:  # offered twice before the loop took the first: never used
            old.close()

    def retired_card(self):
        """The card the loop gave up for a newer one (to be closed here, off the loop), or
        None."""
        pthread_mutex_lock(&self.card_lock)
        old = self.card_old
        self.card_old = None
        pthread_mutex_unlock(&self.card_lock)
        return old

    @property
    def card_state(self) -> str:
        """"ok" or "gone" for a card stream, "none" otherwise."""
        if self.card is None:
            return "none"
        return "ok" if self.card_ok else "gone"

    @property
    def the_card(self):
        """The card the loop drives now (None: not a card stream)."""
        return self.card

    def card_stats(self) -> dict:
        """The card loop's figures (empty without a card)."""
        cdef CardStats c = self.cs
        if self.card is None:
            return {}
        card = self.card
        return {
            "card": "ok" if self.card_ok else "gone",
            "card_error": c.error,
            "audio_xruns": c.xruns_capture + c.xruns_playback + card.capture_xruns
                           + card.playback_xruns,
            "capture_xruns": c.xruns_capture + card.capture_xruns,
            "playback_xruns": c.xruns_playback + card.playback_xruns,
            "playback_dropped": c.playback_dropped + card.playback_dropped,
            "card_timeouts": c.timeouts, "silent_ticks": c.silent_ticks,
            "card_gone": c.gone, "card_adopted": c.adopted, "held_ticks": c.held_ticks,
            "late_periods": c.late_periods, "playback_trimmed": c.trimmed,
            "clock_relocks": c.relocks,
            # how far the periods' arrivals stray from the card clock the paced send follows
            "card_jitter_p99_us": _quantile_us(c.jitter_hist, 0.99, CARD_SNAP_NS),
            "slips_held": self.core.jb.slips_held, "slips_dropped": self.core.jb.slips_dropped,
            "card_ppm": self.slip.ppm,
        }

    def set_capture_cycle(self, pcm) -> None:
        """Before ``run()``: the captured signal is ``pcm`` (little-endian 16-bit samples, at
        least one) repeated from its first sample, taken by the loop itself each period instead
        of from the source FIFO (which then stays unused; no drift control on that side)."""
        cdef const uint8_t[::1] mv = pcm
        cdef int n = mv.shape[0] // 2
        cdef int i
        cdef int16_t *table
        if self.ran:
            raise RuntimeError("the capture cycle is set before run()")
        if n < 1:
            raise ValueError("a capture cycle needs at least one sample")
        table = <int16_t *>malloc(n * sizeof(int16_t))
        if table == NULL:
            raise MemoryError()
        for i in range(n):
            table[i] = <int16_t>(mv[2 * i] | (mv[2 * i + 1] << 8))
        if self.cycle != NULL:
            free(self.cycle)
        self.cycle = table
        self.cycle_len = n
        self.cycle_pos = 0

    @property
    def cycle_position(self) -> int:
        """Where in the capture cycle the next frame starts (0 without one)."""
        return self.cycle_pos

    # the core's settings, where callers have always found them
    @property
    def payload_type(self) -> int:
        return self.core.payload_type

    @property
    def dtmf_payload_type(self) -> int:
        return self.core.dtmf_payload_type

    @property
    def ptime_ms(self) -> int:
        return self.core.ptime_ms

    @property
    def law(self) -> int:
        return self.core.law

    @property
    def jb(self) -> JitterBuffer:
        return self.core.jb

    @property
    def tx_gain_q12(self) -> int:
        return self.core.tx_gain_q12

    @tx_gain_q12.setter
    def tx_gain_q12(self, int value) -> None:
        self.core.tx_gain_q12 = value

    @property
    def rx_gain_q12(self) -> int:
        return self.core.rx_gain_q12

    @rx_gain_q12.setter
    def rx_gain_q12(self, int value) -> None:
        self.core.rx_gain_q12 = value

    @property
    def dtmf_duration_ms(self) -> int:
        return self.core.dtmf_out.duration_ms

    @dtmf_duration_ms.setter
    def dtmf_duration_ms(self, int value) -> None:
        self.core.dtmf_out.duration_ms = value

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
        """The negotiated peer. ``host`` is judged by ``firmware.address`` (the parser SIP and
        SDP use): anything but a strict dotted quad raises ValueError and leaves the stream
        with no peer. Port 0 or 0.0.0.0 (hold) is no peer either: a stream without one sends
        nothing and accepts nothing (not even latching), every datagram a counted drop."""
        cdef sockaddr_in a
        canonical = ipv4(host)
        if canonical is None or not 0 <= port <= 65535 or not 0 <= rtcp_port <= 65535:
            self.clear_remote()
            raise ValueError(f"not an IPv4 address and port: {host!r}:{port}")
        memset(&a, 0, sizeof(a))
        a.sin_family = AF_INET
        a.sin_port = htons(port)
        if inet_pton(AF_INET, canonical.encode(), &a.sin_addr) != 1:  # never, once parsed
            self.clear_remote()
            raise ValueError(f"not an IPv4 address: {host!r}")
        pthread_mutex_lock(&self.lock)
        self.remote = a
        self.remote_rtcp = a
        self.remote_rtcp.sin_port = htons(rtcp_port or (port + 1) & 0xFFFF)
        self.have_remote = port != 0 and a.sin_addr.s_addr != 0
        self.latched = False
        pthread_mutex_unlock(&self.lock)

    def clear_remote(self):
        """No peer: nothing is sent, nothing is accepted (every datagram a wrong_source)."""
        pthread_mutex_lock(&self.lock)
        memset(&self.remote, 0, sizeof(self.remote))
        memset(&self.remote_rtcp, 0, sizeof(self.remote_rtcp))
        self.have_remote = False
        self.latched = False
        pthread_mutex_unlock(&self.lock)

    @property
    def has_remote(self) -> bool:
        """Whether the stream has a peer address to send to and check sources against."""
        return self.have_remote

    def set_direction(self, bint send, bint receive):
        self.core.set_direction(send, receive)

    def send_dtmf(self, str digits) -> int:
        """Queue RFC 4733 events; returns how many were queued (unknown characters skipped)."""
        return self.core.send_dtmf(digits)

    def received_digits(self) -> str:
        """Digits received since the last call."""
        return self.core.received_digits()

    def stop(self):
        self.stop_flag = True

    def stats(self) -> dict:
        cdef IoStats s = self.io
        out = self.core.stats()
        out.update({
            "wrong_source": s.wrong_source, "has_remote": bool(self.have_remote),
            "auth_failures": s.auth_failures, "replays": s.replays,
            "unprotect_errors": s.unprotect_errors, "protect_errors": s.protect_errors,
            "rtcp_refused": s.rtcp_refused, "send_errors": s.send_errors,
            "sink_overruns": self.sink.overruns,
            "ticks": s.ticks, "late_wakeups": s.late_wakeups,
            "max_wakeup_late_us": s.max_wakeup_late_ns / 1000.0,
            "mean_wakeup_late_us": (s.sum_wakeup_late_ns / 1000.0 / s.ticks) if s.ticks else 0.0,
            "realtime": bool(self.realtime_ok),
            # what the loop measured of itself: the work each tick does before its packet is
            # ready, how far after its deadline each packet reached sendto, and how early the
            # loop now prepares a packet (0: one wake-up per period, work and send together)
            "work_p99_us": _quantile_us(s.work_hist, 0.99, s.max_work_ns),
            "work_max_us": s.max_work_ns / 1000.0,
            "send_lag_p99_us": _quantile_us(s.send_lag_hist, 0.99, s.max_send_lag_ns),
            "send_lag_max_us": s.max_send_lag_ns / 1000.0,
            "late_sends": s.late_sends,
            "lead_us": self.lead_ns / 1000.0,
            "kernel_pacing": bool(self.kernel_pacing),
        })
        out.update(self.drift.stats())
        if self.card is not None:
            out.update(self.card_stats())
            if not self.card_separate:
                out["drift_ppm"] = self.slip.ppm
        return out

    # ------------------------------------------------------------------ the loop
    def run(self, int rt_priority=0):
        """Run until stop(); ``rt_priority`` > 0 asks for SCHED_FIFO (kept if refused)."""
        cdef sched_param sp
        cdef int n
        if rt_priority > 0:
            sp.sched_priority = rt_priority
            self.realtime_ok = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0
        self.ran = True
        with nogil:
            if self.card is not None:
                self._card_loop()
            else:
                self._loop()
            if self.have_remote:
                n = self.core.bye_c(_now_ns(), _wall_ns())
                self._protect_outbox(n)
                self._send_outbox(n, 0)

    cdef void _loop(self) noexcept nogil:
        """Each period: wake (at the deadline, or ``lead_ns`` before it once the work has shown
        it costs), prepare the period's packets, then — when ahead — sleep to the deadline and
        send them there. The packet due at a deadline leaves at it whatever the tick cost, as
        long as the work fits in the lead; the lead follows the work it measures."""
        cdef int64_t period = <int64_t>self.core.ptime_ms * 1000000
        cdef int64_t deadline = _now_ns() + period
        cdef int64_t late, target, t0, t1, c0
        cdef int n
        cdef bint ahead
        while not self.stop_flag:
            ahead = self.lead_ns > 0
            target = deadline - self.lead_ns
            if ahead:
                self._sleep_until(target)  # no spin: the send, not this, must be exact
            else:
                self._wait_for(deadline)
            t0 = _now_ns()
            c0 = _cpu_ns()
            late = t0 - target
            self.io.ticks += 1
            self.io.sum_wakeup_late_ns += late
            if <uint64_t>late > self.io.max_wakeup_late_ns:
                self.io.max_wakeup_late_ns = late
            if late > LATE_NS:
                self.io.late_wakeups += 1
            n = self._tick(deadline)
            self._protect_outbox(n)
            t1 = _now_ns()
            self._learn(t1 - t0, _cpu_ns() - c0, t1 - target, period)
            if ahead and not self.kernel_pacing:
                self._wait_for(deadline)  # the second wake-up: the kernel does not pace
            if n > 0:
                self._send_due(n, deadline)
            deadline += period
            if _now_ns() - deadline > 10 * period:  # suspended for long: do not burst
                deadline = _now_ns() + period

    cdef void _card_loop(self) noexcept nogil:
        """The card loop: each wake-up is a capture period arriving (``poll`` on the card), then
        the tick — datagrams in, the period through the processor into the core, the packet
        protected and sent at once, the frame to play through the processor to the card. The
        RTP clock never stops: a period that has not come by its monotonic deadline (the last
        tick + one period + CARD_GRACE_NS) is a silent tick, and a card that is gone (an error,
        or CARD_GONE_AFTER periods missed in a row) leaves the loop ticking on
        CLOCK_MONOTONIC, sending silence, until Python hands over a reopened card."""
        cdef int64_t period = <int64_t>self.core.ptime_ms * 1000000
        cdef int64_t step = period - period // CARD_FAST
        cdef int64_t deadline, tat, t0, late, first
        cdef int16_t captured[MAX_FRAME]
        cdef int fs = self.core.frame_samples
        cdef int rc, got, timeout_ms
        cdef bint from_card
        if self.card.start_c() != 0:
            self._card_lost()
        t0 = _now_ns()
        deadline = t0 + period
        # the pace's theoretical time of the next tick (a GCRA: rate and burst), started with no
        # burst in hand, and the first tick not before a period has passed, as a card's first
        # period comes: a device that is not paced (alsa-lib's file plugin) sent CARD_BURST + 1
        # packets in the instant after the 200 OK, before Asterisk had its ACK out; Asterisk
        # relayed them with an SSRC of its own, then the box's stream with the box's, and
        # baresip dropped all of the latter (test_appliance, 1 run in ~15). The burst
        # allowance builds up by 1/CARD_FAST of a period a tick
        tat = t0 + CARD_BURST * period
        first = t0 + period
        while not self.stop_flag:
            if self.card_pending:
                self._adopt_card()
            got = 0
            from_card = False
            if self.card_ok:
                timeout_ms = <int>((deadline + CARD_GRACE_NS - _now_ns() + 999999) // 1000000)
                rc = self.card.wait_c(timeout_ms)
                if rc == CARD_READY and self.cs.owed > 0 and \
                        _now_ns() < deadline - period // 2:
                    # the late period of a slot already ticked without it (silence went
                    # out): taken and dropped, so that ticks stay one per card period and the
                    # playback queue level
                    self.cs.owed -= 1
                    got = self.card.read_c(captured, fs)
                    if got > 0:
                        self.cs.quiet = 0
                        self.cs.late_periods += 1
                        self.slip.count_c(got)  # the card's rate counts them
                    if self.card.gone:
                        self._card_lost()
                    continue
                if rc == CARD_READY:
                    from_card = True
                    if first > 0:
                        if _now_ns() < first:
                            self._sleep_until(first)
                        first = 0
                    if _now_ns() < tat - CARD_BURST * period:  # ahead of any card's pace
                        self.cs.held_ticks += 1
                        self._sleep_until(tat - CARD_BURST * period)
                    got = self.card.read_c(captured, fs)
                    if got > 0:
                        self.cs.quiet = 0
                elif rc == CARD_TIMEOUT:
                    self.cs.timeouts += 1
                    self.cs.quiet += 1
                    if self.cs.quiet >= CARD_GONE_AFTER:
                        self.card.mark_gone_c(ETIMEDOUT)
                if self.card.gone:
                    self._card_lost()
            else:
                self._sleep_until(deadline)
            t0 = _now_ns()
            if not from_card:
                self.cs.silent_ticks += 1
                if self.card_ok and self.cs.owed < CARD_BURST:
                    self.cs.owed += 1
            elif got > 0 and self.cs.owed > 0 and self.card.capture_avail_c() < fs:
                self.cs.owed = 0  # on time again, nothing behind: the late one never came
            late = t0 - deadline
            self.io.ticks += 1
            if late > 0:
                self.io.sum_wakeup_late_ns += late
                if <uint64_t>late > self.io.max_wakeup_late_ns:
                    self.io.max_wakeup_late_ns = late
                if late > LATE_NS + CARD_GRACE_NS:
                    self.io.late_wakeups += 1
            if got < 0:
                got = 0
            tat = (tat if tat > t0 else t0) + step
            if from_card:
                deadline = t0 + period  # the card's pace
            else:
                deadline += period
                if _now_ns() - deadline > 10 * period:  # suspended for long: do not burst
                    deadline = _now_ns() + period
            self._card_clock(t0, from_card and got == fs, period)
            self._card_tick(t0, captured, got)

    cdef void _card_clock(self, int64_t t0, bint period_came, int64_t period) noexcept nogil:
        """The card clock: when this tick's period was due, smoothed over the arrivals (a
        card hands periods over with the jitter of its interrupts, a USB card at its 1 ms
        frames). A tick without a full period unlocks it; the next period takes it afresh."""
        cdef int64_t due, e
        if not period_came:
            self.clk = 0
            return
        if self.clk != 0:
            due = self.clk + self.clk_per
            e = t0 - due
            if -CARD_SNAP_NS < e < CARD_SNAP_NS:
                self.cs.jitter_hist[_bucket(e if e > 0 else -e)] += 1
                if e > CARD_CLIP_NS:  # one stray period moves the clock by CARD_CLIP_NS / 8
                    e = CARD_CLIP_NS
                elif e < -CARD_CLIP_NS:
                    e = -CARD_CLIP_NS
                self.clk = due + e // 8
                self.clk_per += e // 128
                if self.clk_per > period + period // 200:
                    self.clk_per = period + period // 200
                elif self.clk_per < period - period // 200:
                    self.clk_per = period - period // 200
                return
        self.cs.relocks += 1
        self.clk = t0
        self.clk_per = period

    cdef void _card_tick(self, int64_t t0, int16_t *captured, int got) noexcept nogil:
        """One wake-up's work: ``got`` samples captured (the rest is silence). Without a
        capture processor the packet leaves as soon as it is made; with one (the echo
        canceller's work lies between the period's arrival and the packet) it leaves at the
        card clock's time plus a measured lead, after the frame to play went to the card — the
        wire keeps the card's pace, not the jitter of its deliveries or of the work."""
        cdef int16_t play[MAX_FRAME]
        cdef int fs = self.core.frame_samples
        cdef int n, k
        cdef bint peer, paced
        cdef uint64_t xruns
        cdef int64_t t1, due
        if got < fs:
            memset(&captured[got], 0, (fs - got) * sizeof(int16_t))
        self._receive(t0)
        if self.proc is not None:
            # the card's two queues read at one instant, now: what it holds to play ahead of
            # the last frame written (a frame of none: no sample stored) and what it captured
            # after this period. The figure from the last write is stale when periods come in
            # bursts (a card period of two frames: 0 and 40 ms apart)
            self.proc.playback_c(play, 0, <int>self.card.play_delay_c() if self.card_ok else 0)
            self.proc.capture_c(captured, fs,
                                self.card.capture_avail_c() if self.card_ok else 0)
        pthread_mutex_lock(&self.lock)
        peer = self.have_remote
        pthread_mutex_unlock(&self.lock)
        n = self.core.tick_c(t0, _wall_ns(), captured, got, peer, play)
        xruns = self.card.capture_xruns + self.card.playback_xruns
        if got < fs or xruns != self.slip_xruns:
            # no period, or samples lost to an xrun: the count of ticks no longer measures
            # the card's clock. The jitter buffer absorbs what the break did (a backlog, a
            # gap) on its own; the clocks are compared again from the next period
            self.slip_xruns = xruns
            self.slip.restart_c()
            self.core.jb.forget_slips_c()
        else:
            k = self.slip.tick_c(t0, got)
            if k != 0:
                self.core.jb.ask_slips_c(k)
        self._protect_outbox(n)
        t1 = _now_ns()
        self.io.work_hist[_bucket(t1 - t0)] += 1
        if t1 - t0 > self.io.max_work_ns:
            self.io.max_work_ns = t1 - t0
        # paced: the packet leaves at the card clock's time + the lead, not when its period
        # came — where work lies between the two, or where pacing costs no second wake-up
        paced = (self.proc is not None or self.kernel_pacing) and self.clk != 0
        if paced:
            self._card_lead(t1 - self.clk, <int64_t>self.core.ptime_ms * 1000000)
        elif n > 0:
            self._send_due(n, t0)  # a silent tick, or nothing between the period and the send
        self._card_play(play)
        if paced and n > 0:
            due = self.clk + self.lead_ns
            if not self.kernel_pacing and _now_ns() < due:
                self._sleep_until(due)  # the second wake-up: the kernel does not pace
            self._send_due(n, due)

    cdef void _send_due(self, int n, int64_t due) noexcept nogil:
        """The outbox out now — with ``due`` as the RTP packets' departure time when the
        kernel paces; how far after ``due`` they reached the socket (the deadline; on the card
        loop the period's arrival, or the card clock's time + the lead) is the send lag."""
        cdef int64_t lag = _now_ns() - due
        self._send_outbox(n, due if self.kernel_pacing else 0)
        if lag < 0:
            lag = 0
        self.io.send_lag_hist[_bucket(lag)] += 1
        if lag > self.io.max_send_lag_ns:
            self.io.max_send_lag_ns = lag
        if lag >= LATE_NS:
            self.io.late_sends += 1

    cdef void _card_lead(self, int64_t need, int64_t period) noexcept nogil:
        """The paced send's lead after the card clock: the worst ``need`` (the clock's time ->
        the packet ready: the delivery's lateness and the work) of the window, +25 % +
        LEAD_SLACK_NS, within [LEAD_MIN_NS, 3/4 period]; up at once, down by LEAD_FALL_NS a tick."""
        cdef int i
        cdef int64_t worst = 0, lead
        self.need_win[self.win_pos] = need
        self.win_pos = (self.win_pos + 1) % WINDOW
        for i in range(WINDOW):
            if self.need_win[i] > worst:
                worst = self.need_win[i]
        lead = _lead_for(worst, period)
        if lead < self.lead_ns - LEAD_FALL_NS:
            lead = self.lead_ns - LEAD_FALL_NS
        self.lead_ns = lead

    cdef void _card_play(self, int16_t *play) noexcept nogil:
        """The frame to play: to the canceller as its reference, then to the card (through
        the drift resampler when playback is a card of its own)."""
        cdef int16_t out[2 * MAX_FRAME + 8]
        cdef int fs = self.core.frame_samples
        cdef int k
        cdef long queued = self.card.play_delay_c() if self.card_ok else 0
        if self.proc is not None:
            self.proc.playback_c(play, fs, <int>queued)
        if not self.card_ok:
            return
        if self.card_separate:
            k = self.drift.playback_c(play, out, <int>queued, 0)
            self.card.write_c(out, k)
        else:
            # one card, one clock: before each write the queue is the prefill, give or take
            # the wake-up's jitter. More, tick after tick (a period that came late was ticked
            # as a new one), is latency that would stay: the frame's start goes instead
            # (counted); more for a tick or two is the moment's view (CARD_TRIM_AFTER)
            k = <int>queued - self.card.prefill - fs // 4
            if self.card.play_running and k > 0:
                self.cs.over += 1
            else:
                self.cs.over = 0
            if self.cs.over >= CARD_TRIM_AFTER:
                if k > fs // 2:  # half a frame a tick at most: every tick writes, so a
                    k = fs // 2  # stalled PCM's error is seen (and recovered) by the write
                self.cs.trimmed += k
                self.card.write_c(play + k, fs - k)
            else:
                self.card.write_c(play, fs)
        if self.card.gone:
            self._card_lost()

    cdef void _card_lost(self) noexcept nogil:
        """The card went: the loop goes on without it (silence, the monotonic clock)."""
        if not self.card_ok:
            return
        self.card_ok = False
        self.cs.gone += 1
        self.cs.error = self.card.error
        self._card_notify()

    cdef void _card_notify(self) noexcept nogil:
        cdef uint64_t one = 1
        if self.card_fd >= 0:
            fd_write(self.card_fd, &one, 8)

    cdef void _adopt_card(self) noexcept nogil:
        """The card Python reopened replaces the one that went (which Python closes)."""
        cdef bint ok
        with gil:
            pthread_mutex_lock(&self.card_lock)
            if self.card_next is not None:
                self.cs.xruns_capture += self.card.capture_xruns
                self.cs.xruns_playback += self.card.playback_xruns
                self.cs.playback_dropped += self.card.playback_dropped
                self.card_old = self.card
                self.card = self.card_next
                self.card_next = None
            self.card_pending = False
            pthread_mutex_unlock(&self.card_lock)
        ok = self.card.start_c() == 0
        self.card_ok = ok
        self.cs.quiet = 0
        self.cs.owed = 0
        self.cs.over = 0
        self.clk = 0
        if ok:
            self.cs.adopted += 1
        else:
            self.cs.gone += 1
            self.cs.error = self.card.error
        self._card_notify()

    cdef void _sleep_until(self, int64_t when) noexcept nogil:
        cdef timespec t
        t.tv_sec = when // 1000000000
        t.tv_nsec = when % 1000000000
        while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR:
            pass

    cdef void _wait_for(self, int64_t deadline) noexcept nogil:
        """Sleep to the deadline (or spin_us before it, then spin: hides idle-exit latency);
        at once when it has passed."""
        cdef int64_t wake = deadline - <int64_t>self.spin_us * 1000
        if _now_ns() < wake:
            self._sleep_until(wake)
        while self.spin_us and _now_ns() < deadline:
            pass

    cdef void _learn(self, int64_t work, int64_t cpu, int64_t need,
                     int64_t period) noexcept nogil:
        """One tick's cost into the window; the lead for the next ticks from its worst.

        ``cpu`` (the work's CPU time) decides whether to split: below SPLIT_OFF_NS a second
        wake-up per period buys nothing; above SPLIT_ON_NS it keeps the wire on time.
        ``need`` (wall time from when the wake-up was due to the packet ready) sizes the lead:
        a late wake-up or a preemption eats into it as the work does. The lead is bounded to
        three quarters of the period, and at least LEAD_MIN_NS: work that does not fit in that
        makes late packets (counted), never a loop that falls behind. ``work`` (wall time from
        the wake-up) is what ``stats()`` reports."""
        cdef int i
        cdef int64_t max_cpu = 0, max_need = 0
        self.io.work_hist[_bucket(work)] += 1
        if work > self.io.max_work_ns:
            self.io.max_work_ns = work
        self.work_win[self.win_pos] = cpu
        self.need_win[self.win_pos] = need
        self.win_pos = (self.win_pos + 1) % WINDOW
        for i in range(WINDOW):
            if self.work_win[i] > max_cpu:
                max_cpu = self.work_win[i]
            if self.need_win[i] > max_need:
                max_need = self.need_win[i]
        if self.kernel_pacing:
            self.split = True  # ahead costs no wake-up: the wake-up's lateness stays off the wire
        elif self.split:
            if max_cpu < SPLIT_OFF_NS:
                self.split = False
        elif max_cpu > SPLIT_ON_NS:
            self.split = True
        if not self.split:
            self.lead_ns = 0
            return
        self.lead_ns = _lead_for(max_need, period)

    cdef int _tick(self, int64_t now_ns) noexcept nogil:
        """One period's work for the packets due at ``now_ns``: datagrams in, a captured frame
        through the processor into the core, the core's frame to play through the processor
        into the sink. Returns how many packets wait in the core's outbox (sent by the
        caller at the deadline)."""
        cdef int16_t captured[MAX_FRAME]
        cdef int16_t play[MAX_FRAME]
        cdef int16_t raw[RS_BUF]
        cdef int fs = self.core.frame_samples
        cdef int got, n, need
        cdef bint peer
        cdef int64_t t
        self._receive(now_ns)
        if self.cycle != NULL:
            self._cycle_frame(captured, fs)
            got = fs
        elif self.drift.cap_on:
            t = _now_ns()
            need = self.drift.capture_need_c(self.source.level(),
                                             t - self.source.last_push_ns
                                             if self.source.last_push_ns else 0)
            got = self.source.pull(raw, need)
            got = self.drift.capture_c(captured, raw, got)
        else:
            got = self.source.pull(captured, fs)
            if got < fs:
                memset(&captured[got], 0, (fs - got) * sizeof(int16_t))
        if self.proc is not None:
            self.proc.capture_c(captured, fs, 0 if self.cycle != NULL else self.source.level())
        pthread_mutex_lock(&self.lock)
        peer = self.have_remote
        pthread_mutex_unlock(&self.lock)
        # the wall clock as it will read at the deadline: RTCP's NTP time goes with the packet
        n = self.core.tick_c(now_ns, _wall_ns() + (now_ns - _now_ns()), captured, got, peer,
                             play)
        if self.proc is not None:
            self.proc.playback_c(play, fs, 0 if self.discard_playback else self.sink.level())
        if self.discard_playback:
            pass
        elif self.drift.play_on:
            self._play_resampled(play)
        else:
            self.sink.push(play, fs)
        return n

    cdef void _cycle_frame(self, int16_t *dst, int n) noexcept nogil:
        """The next ``n`` samples of the capture cycle (wrapping as often as it must)."""
        cdef int take
        while n > 0:
            take = self.cycle_len - self.cycle_pos
            if take > n:
                take = n
            memcpy(dst, &self.cycle[self.cycle_pos], take * sizeof(int16_t))
            dst += take
            n -= take
            self.cycle_pos += take
            if self.cycle_pos == self.cycle_len:
                self.cycle_pos = 0

    cdef void _play_resampled(self, const int16_t *play) noexcept nogil:
        cdef int16_t out[2 * MAX_FRAME + 8]
        cdef int64_t t = _now_ns()
        cdef int n = self.drift.playback_c(play, out, self.sink.level(),
                                           t - self.sink.last_pull_ns
                                           if self.sink.last_pull_ns else 0)
        self.sink.push(out, n)

    cdef void _protect_outbox(self, int n) noexcept nogil:
        """The transform over the outbox's packets, before the deadline: at it only sendto
        remains. A packet it refuses is counted and marked (length -1) not to be sent."""
        cdef int i
        for i in range(n):
            self.out_len[i] = self.core.out[i].n
            if self.xform is None:
                continue
            if self.core.out[i].rtcp:
                self.out_len[i] = self.xform.protect_rtcp_c(self.core.out_data[i],
                                                            self.out_len[i], PACKET_MAX)
            else:
                self.out_len[i] = self.xform.protect_rtp_c(self.core.out_data[i],
                                                           self.out_len[i], PACKET_MAX)
            if self.out_len[i] < 0:
                self.io.protect_errors += 1

    cdef void _send_outbox(self, int n, int64_t at) noexcept nogil:
        """The outbox's protected packets to the peer as it is now (it may have moved since
        they were made; none when it has gone). ``at`` > 0: the RTP packets carry it as their
        departure time (kernel pacing; RTCP goes at once)."""
        cdef int i
        cdef bint peer
        cdef sockaddr_in to
        cdef ssize_t rc
        for i in range(n):
            if self.out_len[i] < 0:
                continue
            pthread_mutex_lock(&self.lock)
            to = self.remote_rtcp if self.core.out[i].rtcp else self.remote
            peer = self.have_remote
            pthread_mutex_unlock(&self.lock)
            if not peer:  # the peer went (hold, clear_remote) after the packet was made
                continue
            if at > 0 and not self.core.out[i].rtcp:
                rc = self._send_at(self.core.out_data[i], self.out_len[i], &to, at)
            else:
                rc = sendto(self.rtcp_fd if self.core.out[i].rtcp else self.rtp_fd,
                            self.core.out_data[i], self.out_len[i], 0, <sockaddr *>&to,
                            sizeof(to))
            if rc > 0:
                self.core.sent_c(i)
            else:
                self.io.send_errors += 1

    cdef ssize_t _send_at(self, const uint8_t *data, int n, sockaddr_in *to,
                          int64_t at) noexcept nogil:
        """One RTP datagram handed to the kernel with its departure time (``SCM_TXTIME``)."""
        cdef iovec iov
        cdef msghdr msg
        cdef uint64_t control[4]  # CMSG_SPACE(8) (24 bytes), 8-byte aligned
        cdef cmsghdr *c
        cdef uint64_t t = <uint64_t>at
        iov.iov_base = <void *>data
        iov.iov_len = n
        memset(&msg, 0, sizeof(msg))
        memset(control, 0, sizeof(control))
        msg.msg_name = to
        msg.msg_namelen = sizeof(sockaddr_in)
        msg.msg_iov = &iov
        msg.msg_iovlen = 1
        msg.msg_control = control
        msg.msg_controllen = CMSG_SPACE(sizeof(uint64_t))
        c = CMSG_FIRSTHDR(&msg)
        c.cmsg_level = SOL_SOCKET
        c.cmsg_type = SCM_TXTIME
        c.cmsg_len = CMSG_LEN(sizeof(uint64_t))
        memcpy(CMSG_DATA(c), &t, sizeof(uint64_t))
        return sendmsg(self.rtp_fd, &msg, 0)

    cdef void _receive(self, int64_t now_ns) noexcept nogil:
        cdef uint8_t bufs[RECV_BATCH][1500]
        cdef uint8_t controls[RECV_BATCH][128]
        cdef sockaddr_in srcs[RECV_BATCH]
        cdef iovec iovs[RECV_BATCH]
        cdef mmsghdr msgs[RECV_BATCH]
        cdef uint8_t buf[1500]
        cdef sockaddr_in src
        cdef socklen_t slen
        cdef ssize_t n
        cdef int got, k, rc
        while True:
            # one system call takes what the socket holds (a packet a tick, as a rule); only a
            # full batch asks again, so an empty socket costs no extra call to find out
            memset(msgs, 0, sizeof(msgs))
            for k in range(RECV_BATCH):
                iovs[k].iov_base = bufs[k]
                iovs[k].iov_len = sizeof(bufs[k])
                msgs[k].msg_hdr.msg_name = &srcs[k]
                msgs[k].msg_hdr.msg_namelen = sizeof(srcs[k])
                msgs[k].msg_hdr.msg_iov = &iovs[k]
                msgs[k].msg_hdr.msg_iovlen = 1
                msgs[k].msg_hdr.msg_control = controls[k]
                msgs[k].msg_hdr.msg_controllen = sizeof(controls[k])
            got = recvmmsg(self.rtp_fd, msgs, RECV_BATCH, MSG_DONTWAIT, NULL)
            if got <= 0:
                break
            for k in range(got):
                self._take_rtp(bufs[k], <int>msgs[k].msg_len, &srcs[k], &msgs[k].msg_hdr)
            if got < RECV_BATCH:
                break
        while True:  # RTCP from the peer: counted; SR timestamps kept for LSR/DLSR
            slen = sizeof(src)
            n = recvfrom(self.rtcp_fd, buf, sizeof(buf), MSG_DONTWAIT, <sockaddr *>&src, &slen)
            if n < 0:
                break
            pthread_mutex_lock(&self.lock)
            if not self.have_remote or src.sin_addr.s_addr != self.remote_rtcp.sin_addr.s_addr \
                    or src.sin_port != self.remote_rtcp.sin_port:
                pthread_mutex_unlock(&self.lock)
                self.io.wrong_source += 1  # RTCP only from the negotiated peer's RTCP port
                continue
            pthread_mutex_unlock(&self.lock)
            if self.xform is not None:
                rc = self.xform.unprotect_rtcp_c(buf, <int>n)
                if rc < 0:
                    self.io.rtcp_refused += 1
                    continue
                n = rc
            self.core.receive_rtcp_c(buf, <int>n, now_ns)

    cdef void _take_rtp(self, uint8_t *buf, int n, sockaddr_in *src, msghdr *msg) noexcept nogil:
        """One RTP datagram from the socket: its kernel arrival time, the peer's address and
        authenticity (strangers cost no crypto), parsed and handed to the core."""
        cdef cmsghdr *cm
        cdef timespec *stamp
        cdef int64_t arrival_ns = 0
        cdef RtpHeader h
        cdef int rc
        cm = CMSG_FIRSTHDR(msg)
        while cm != NULL:
            if cm.cmsg_level == SOL_SOCKET and cm.cmsg_type == SCM_TIMESTAMPNS:
                stamp = <timespec *>CMSG_DATA(cm)
                arrival_ns = <int64_t>stamp.tv_sec * 1000000000 + stamp.tv_nsec
            cm = CMSG_NXTHDR(msg, cm)
        if arrival_ns == 0:
            arrival_ns = _wall_ns()
        if self.xform is not None:
            # address first (no crypto spent on strangers), then authenticity; latching
            # below happens only for a packet that authenticated
            pthread_mutex_lock(&self.lock)
            rc = self._may_come_from(src)
            pthread_mutex_unlock(&self.lock)
            if not rc:
                self.io.wrong_source += 1
                return
            rc = self.xform.unprotect_rtp_c(buf, n)
            if rc < 0:
                self._count_refused(rc)
                return
            n = rc
        if rtp_parse_c(buf, n, &h) != 0:
            self.core.malformed_c()  # Cython 3.0 (the image's) refuses core.st.x += 1 here
            return
        pthread_mutex_lock(&self.lock)
        if not self._source_ok(src):
            pthread_mutex_unlock(&self.lock)
            self.io.wrong_source += 1
            return
        pthread_mutex_unlock(&self.lock)
        self.core.receive_rtp_c(buf, &h, arrival_ns)

    cdef void _count_refused(self, int rc) noexcept nogil:
        """An RTP packet the transform refused: counted by reason."""
        if rc == XF_AUTH:
            self.io.auth_failures += 1
        elif rc == XF_REPLAY:
            self.io.replays += 1
        else:
            self.io.unprotect_errors += 1

    cdef bint _may_come_from(self, sockaddr_in *src) noexcept nogil:
        """What _source_ok would accept, without latching (called with the lock held).
        Fails closed: without a negotiated peer nothing may come from anywhere."""
        if not self.have_remote:
            return False
        if src.sin_addr.s_addr == self.remote.sin_addr.s_addr and \
                src.sin_port == self.remote.sin_port:
            return True
        return self.latch and not self.latched

    cdef bint _source_ok(self, sockaddr_in *src) noexcept nogil:
        """Symmetric RTP: accept the SDP address; with latching, move to the first sender,
        and only when SDP gave a peer address (a stream without one accepts nothing). A
        packet from the SDP address settles it too: the peer is where SDP said, and nobody
        sending later can move the stream."""
        if not self.have_remote:
            return False
        if src.sin_addr.s_addr == self.remote.sin_addr.s_addr and \
                src.sin_port == self.remote.sin_port:
            self.latched = True
            return True
        if self.latch and not self.latched:
            self.remote.sin_addr = src.sin_addr
            self.remote.sin_port = src.sin_port
            self.remote.sin_family = AF_INET
            self.remote_rtcp.sin_addr = src.sin_addr
            self.remote_rtcp.sin_port = htons(ntohs(src.sin_port) + 1)
            self.latched = True
            return True
        return False
