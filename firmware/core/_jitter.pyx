# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The adaptive jitter buffer for one RTP stream of fixed-size frames.

Owns playout timing on the receive side: packets placed by timestamp, one frame popped per
period, the playout delay grown on late packets and shrunk when the buffer stays deep, resync
on an SSRC change or a timestamp jump. Of codecs it knows only which G.711 frames are pauses
(``_g711``'s predicates, to shed delay where no one hears it); nothing of concealment (a missing
frame is returned as 0 bytes: the caller conceals), RTP parsing, clocks or sockets;
``firmware.media._reference.JitterBuffer`` is its twin, tested packet by packet.
"""

from libc.stdint cimport int16_t, int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from firmware.core._g711 cimport alaw_quiet_c, ulaw_quiet_c

cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil

if JB_SLOTS > 64:  # used_mask has one bit per slot
    raise ImportError("JB_SLOTS must fit in a 64-bit mask")

# put() results
JB_OK, JB_LATE, JB_DUPLICATE, JB_RESYNC, JB_TOO_EARLY = 0, 1, 2, 3, 4


cdef class JitterBuffer:
    """Adaptive playout buffer for one RTP stream of fixed-size frames.

    Packets are placed by timestamp; ``pop`` is called once per frame period and returns the
    frame due now or 0 (missing: the caller conceals). The playout delay starts at ``target``
    frames, grows by one frame whenever a packet arrives too late (up to ``max_frames``) and
    shrinks by one when the buffer stays deeper than needed for 1 s (down to ``min_frames``);
    a backlog in the stream's first second is skipped at once, a large one later within 0.1 s
    a frame. While the path is clean (no packet yet late or missing), a delay the stream has
    not needed for 2 s goes too, a frame at a time, down to ``min_frames``, each at a pause
    when the owner says what a pause is (``quiet``: a frame dropped there is not heard; after
    5 s without one, anyway): with ``min_frames`` 0 each frame is then played at the first tick
    after it arrives. The first late packet or
    missing frame ends that: the minimum becomes at least one frame for the rest of the buffer's
    life (a missing frame at no delay holds the playout point one period, so the concealer has
    the frame after a gap to bridge towards) and only a backlog shrinks the delay, so it cannot
    flap with the jitter.
    """

    def __cinit__(self, int frame_samples=160, int target=2, int min_frames=1,
                  int max_frames=10):
        self.quiet = NULL
        self.frame_samples = frame_samples
        self.min_frames = min_frames
        self.max_frames = max_frames if max_frames < JB_SLOTS - 2 else JB_SLOTS - 2
        self.target = target
        self.clean = True
        self.reset_c()

    def reset(self):
        self.reset_c()

    cdef void reset_c(self) noexcept nogil:
        cdef int i
        for i in range(JB_SLOTS):
            self.slots[i].used = 0
        self.used_mask = 0
        self.started = False
        self.deep_ticks = 0
        self.slack_ticks = 0
        self.pops = 0

    cdef int put_c(self, uint32_t ts, uint16_t seq, uint32_t ssrc, const uint8_t *data,
                   int length) noexcept nogil:
        cdef int32_t ahead
        cdef int idx
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
            self.first_ts = ts
            self.ssrc = ssrc
            self.play_ts = ts - <uint32_t>(self.target * self.frame_samples)
            self.highest_seq = seq
        ahead = <int32_t>(ts - self.play_ts)
        if ahead < 0:
            self.late += 1
            self._unclean_c()
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
        idx = (ts // self.frame_samples) % JB_SLOTS
        s = &self.slots[idx]
        if s.used and s.ts == ts:
            self.duplicates += 1
            return 2
        s.used = 1
        self.used_mask |= (<uint64_t>1) << idx
        s.ts = ts
        s.seq = seq
        s.length = length
        memcpy(s.data, data, length)
        return rc

    cdef int pop_c(self, uint8_t *out) noexcept nogil:
        cdef Slot *s
        cdef int n = 0, depth, excess, idx, threshold
        if not self.started:
            return 0
        if self.slip_pending != 0:
            n = self._slip_c(out)
            if n > 0:
                return n
        idx = (self.play_ts // self.frame_samples) % JB_SLOTS
        s = &self.slots[idx]
        if s.used and s.ts == self.play_ts:
            memcpy(out, s.data, s.length)
            n = s.length
            s.used = 0
            self.used_mask &= ~((<uint64_t>1) << idx)
        elif <int32_t>(self.play_ts - self.first_ts) >= 0:  # a gap, not the start's delay
            self._unclean_c()
            if self.target < 1:
                # nothing in hand: keep one frame from now on (this period is concealed and
                # the playout point stays, i.e. one period of delay added)
                self.target = 1
                self.grows += 1
                return 0
        self.play_ts += self.frame_samples
        if self.pops < START_PERIODS:
            self.pops += 1
        # drain: a backlog in the stream's first second is what queued up while the call was
        # being set up (a PBX bridging, Echo() starting): skip a frame every period while more
        # than target+1 frames wait. Later, when more than target frames wait for DRAIN_SLOW consecutive
        # periods (1 s), or for DRAIN_FAST periods when the excess is over DRAIN_FAR + 1 frames
        # (a burst that arrived after a stall: without this it would be played late for the
        # whole call), skip one frame; the target itself shrinks only down to its minimum
        depth = self.depth_c()
        excess = depth - self.target
        if excess > 0:
            self.deep_ticks += 1
            if self.pops < START_PERIODS:
                threshold = 1 if excess > 1 else DRAIN_SLOW
            else:
                threshold = DRAIN_FAST if excess > DRAIN_FAR + 1 else DRAIN_SLOW
            # a slow drain (one frame over for 1 s: the far end's clock running fast, or a
            # stall's tail) waits for a pause like shedding does; the fast ones do not wait
            if self.deep_ticks >= threshold and (
                    threshold != DRAIN_SLOW or self._may_shed_c(self.deep_ticks - DRAIN_SLOW)):
                self._skip_c()
                self.deep_ticks = 0
            self.slack_ticks = 0
        else:
            self.deep_ticks = 0
            # a clean path that has had a frame in hand at every tick for SLACK_PERIODS did
            # not need it: one frame of delay goes
            if self.clean and self.target > self.min_frames and depth >= 1:
                self.slack_ticks += 1
                if self.slack_ticks >= SLACK_PERIODS and \
                        self._may_shed_c(self.slack_ticks - SLACK_PERIODS):
                    self._skip_c()
                    self.slack_ticks = 0
            else:
                self.slack_ticks = 0
        return n

    cdef int _slip_c(self, uint8_t *out) noexcept nogil:
        """A clock slip the owner asked for (``slip_pending``), at a pause (or after
        QUIET_WAIT periods without one): held, the pause's frame is returned and stays due
        (played twice: the playout one period later); dropped, it goes and the pop goes on
        with the next. Returns the frame's length when this pop is done (a hold), else 0."""
        cdef Slot *s = &self.slots[(self.play_ts // self.frame_samples) % JB_SLOTS]
        cdef bint here = s.used and s.ts == self.play_ts
        cdef bint quiet
        self.slip_wait += 1
        if not here:
            return 0
        quiet = self.quiet == NULL or self.quiet(s.data, s.length)
        if not quiet and self.slip_wait < QUIET_WAIT:
            return 0
        self.slip_wait = 0
        if self.slip_pending > 0:
            self.slip_pending -= 1
            self.slips_held += 1
            memcpy(out, s.data, s.length)
            return s.length
        self.slip_pending += 1
        self.slips_dropped += 1
        s.used = 0
        self.used_mask &= ~((<uint64_t>1) << ((self.play_ts // self.frame_samples) % JB_SLOTS))
        self.play_ts += self.frame_samples
        return 0

    def slip(self, int frames) -> None:
        """Ask for ``frames`` clock slips (+: hold the playout one period each, -: drop one
        frame each), each done at the next pause."""
        self.slip_pending += frames

    cdef void _skip_c(self) noexcept nogil:
        """Drop the next frame due (one period less delay); the target follows, down to the
        minimum."""
        cdef int idx = (self.play_ts // self.frame_samples) % JB_SLOTS
        self.slots[idx].used = 0
        self.used_mask &= ~((<uint64_t>1) << idx)
        self.play_ts += self.frame_samples
        if self.target > self.min_frames:
            self.target -= 1
        self.shrinks += 1

    cdef bint _may_shed_c(self, int waited) noexcept nogil:
        """The frame due next may be dropped now: it is a pause, or ``waited`` periods have
        passed without one (QUIET_WAIT)."""
        cdef Slot *s
        if self.quiet == NULL or waited >= QUIET_WAIT:
            return True
        s = &self.slots[(self.play_ts // self.frame_samples) % JB_SLOTS]
        return s.used and s.ts == self.play_ts and self.quiet(s.data, s.length)

    def shed_at_pauses(self, int law) -> None:
        """Shed delay only at a G.711 pause (``law`` 0 mu-law, 1 A-law; -1: anywhere)."""
        if law < 0:
            self.quiet = NULL
        elif law:
            self.quiet = alaw_quiet_c
        else:
            self.quiet = ulaw_quiet_c

    cdef void _unclean_c(self) noexcept nogil:
        """A packet came late or went missing: the path is not clean (for good)."""
        self.clean = False
        self.slack_ticks = 0
        if self.min_frames < 1:
            self.min_frames = 1

    cdef int depth_c(self) noexcept nogil:
        """Frames buffered at or after the playout point."""
        cdef int i, d = 0
        cdef uint64_t m = self.used_mask  # every slot in use (maybe more): a few, not all 64
        while m:
            i = __builtin_ctzll(m)
            m &= m - 1
            if self.slots[i].used and <int32_t>(self.slots[i].ts - self.play_ts) >= 0:
                d += 1
        return d

    cdef int peek_c(self, uint8_t *out, int ahead) noexcept nogil:
        """The frame ``ahead`` periods after the one the next pop returns, copied to ``out``
        and left in place (its length), or 0 when it is not here: lets the caller conceal a
        missing frame towards the audio that follows it."""
        cdef uint32_t ts
        cdef Slot *s
        if not self.started or ahead < 0 or ahead >= JB_SLOTS - 1:
            return 0
        ts = self.play_ts + <uint32_t>(ahead * self.frame_samples)
        s = &self.slots[(ts // self.frame_samples) % JB_SLOTS]
        if not s.used or s.ts != ts:
            return 0
        memcpy(out, s.data, s.length)
        return s.length

    def put(self, unsigned int ts, int seq, unsigned int ssrc, payload) -> int:
        cdef const uint8_t[::1] mv = payload
        return self.put_c(ts, <uint16_t>seq, ssrc, &mv[0] if mv.shape[0] else NULL,
                          mv.shape[0])

    def pop(self):
        """The frame due now (bytes), or None when it is missing."""
        cdef uint8_t out[MAX_FRAME]
        cdef int n = self.pop_c(out)
        return out[:n] if n else None

    def peek(self, int ahead=0):
        """The frame ``ahead`` periods after the next one due (bytes, not removed), or None."""
        cdef uint8_t out[MAX_FRAME]
        cdef int n = self.peek_c(out, ahead)
        return out[:n] if n else None

    @property
    def depth(self) -> int:
        return self.depth_c()
