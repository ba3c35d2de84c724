# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Sound-card clock drift: measured from the FIFO fill trends, absorbed by resampling.

Owns the rate match between the 20 ms loop (the network's clock) and a sound card whose crystal
is a few hundred ppm off. The playback FIFO is filled by the loop and drained by the card; the
capture FIFO is filled by the card and drained by the loop: a rate difference shows as a fill
level that trends up or down. The level is read between the card's periods as if the card moved
samples continuously (the FIFO count, corrected by the time since the card's side last touched
it), so it moves smoothly instead of by whole periods. Each side has a ``FillControl`` (a PI
controller on that level averaged over one-second blocks, the first settled block being the
target, which then walks down to the side's floor at 6 samples a second) whose output steers
a ``Resampler`` (4-point cubic, Catmull-Rom, variable step) so the level stays put: playback
frames become 159-161 samples, captured frames are made of 159-161 card samples. The
controller's output, averaged over about 30 s, is the measured drift (``drift_ppm``: positive
when the card runs fast). The targets have floors so that wherever the card's periods fall
between the loop's ticks, the card never finds the playback FIFO empty and the loop never finds
the capture FIFO short (a few ms more latency on each side). A side without a sound card behind
its FIFO (a WAV file, a tone: paced by the loop itself) is off and passes frames untouched. Resampling, not dropping or repeating samples: no click, even on a
pure tone. Where the loop itself is clocked by the card (the card loop: no FIFO between them),
``ClockSlip`` measures the card's rate against the monotonic clock the network's packets keep
and turns the accumulated difference into whole-frame slips for the jitter buffer to make at a
pause. Knows nothing about RTP, sockets, threads or ALSA; time is the caller's.
"""

from libc.stdint cimport int16_t, int64_t
from libc.string cimport memcpy, memmove, memset
from libc.math cimport floor
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

cdef int TICKS_PER_BLOCK = 50  # one second of 20 ms ticks
cdef int WARMUP_BLOCKS = 2
cdef double TARGET_WALK = 6.0  # samples a block (a second) the target moves toward its floor
cdef int64_t STALE_NS = 100000000  # the card's side idle longer than this: no correction


cdef class Resampler:
    """Variable-ratio 4-point cubic interpolator over a short input queue.

    ``pos`` is where the next output sample sits in ``buf``; an output at ``pos`` needs
    ``buf[floor(pos) - 1 .. floor(pos) + 2]``. At a whole ``pos`` with step 1 the output is
    the input, sample for sample.
    """

    def __cinit__(self):
        self.reset_c()

    cdef void reset_c(self) noexcept nogil:
        self.buf[0] = 0  # one sample of history before the first input
        self.count = 1
        self.pos = 1.0

    cdef int push_c(self, const int16_t *x, int n) noexcept nogil:
        if n > RS_BUF - self.count:
            n = RS_BUF - self.count
        if n > 0:
            memcpy(&self.buf[self.count], x, n * sizeof(int16_t))
            self.count += n
        return n

    cdef int produce_c(self, int16_t *out, int max_out, double step) noexcept nogil:
        cdef int n = 0, i, k
        cdef double f, xm1, x0, x1, x2, v
        # the state in locals: the extension is built with -fno-strict-aliasing, so each store
        # to ``out`` would otherwise reload pos, count and buf from the object
        cdef double pos = self.pos
        cdef int count = self.count
        cdef const int16_t *buf = self.buf
        while n < max_out:
            i = <int>pos
            if i + 2 >= count:
                break
            f = pos - i
            x0 = buf[i]
            if f == 0.0:
                v = x0
            else:
                xm1 = buf[i - 1]
                x1 = buf[i + 1]
                x2 = buf[i + 2]
                v = x0 + 0.5 * f * (x1 - xm1 + f * (2.0 * xm1 - 5.0 * x0 + 4.0 * x1 - x2 +
                                                   f * (3.0 * (x0 - x1) + x2 - xm1)))
                v = floor(v + 0.5)
                if v > 32767:
                    v = 32767
                elif v < -32768:
                    v = -32768
            out[n] = <int16_t>v
            n += 1
            pos += step
        self.pos = pos
        k = <int>self.pos - 1  # keep one sample of history
        if k > self.count:
            k = self.count
        if k > 0:
            memmove(self.buf, self.buf + k, (self.count - k) * sizeof(int16_t))
            self.count -= k
            self.pos -= k
        return n

    cdef int needed_c(self, int n_out, double step) noexcept nogil:
        """Input samples to push before ``n_out`` outputs can be produced at ``step``."""
        cdef int need = <int>(self.pos + (n_out - 1) * step) + 3 - self.count
        return need if need > 0 else 0


cdef class FillControl:
    """PI control of one FIFO's fill level; its output is the resampling step's offset."""

    def __cinit__(self):
        self.block_ticks = TICKS_PER_BLOCK
        self.warmup = WARMUP_BLOCKS
        # loop natural frequency about 0.05 rad/s at 8000 samples/s: level errors of a few
        # samples, the step changing by parts per million a second (inaudible)
        self.kp = 1.25e-5
        self.ki = 3.1e-7
        self.limit = 1000e-6

    cdef double tick_c(self, double level) noexcept nogil:
        cdef double mean, err
        self.level_sum += level
        self.ticks += 1
        if self.ticks < self.block_ticks:
            return self.u
        mean = self.level_sum / self.ticks
        self.ticks = 0
        self.level_sum = 0
        self.blocks += 1
        if self.blocks == self.warmup:
            # where the level settled, but never below the floor that keeps the FIFO from
            # running dry somewhere in the card's period
            self.target = mean if mean > self.floor else self.floor
            self.have_target = True
            return self.u
        if not self.have_target:
            return self.u
        # then walk the target down to the floor, a few samples a second: whatever the start
        # left queued (a backlog when the call began) is latency, and the controller removes
        # it at a rate no ear hears (TARGET_WALK samples per second is 750 ppm at 8 kHz)
        if self.target > self.floor + TARGET_WALK:
            self.target -= TARGET_WALK
        elif self.target > self.floor:
            self.target = self.floor
        err = mean - self.target
        self.integ += self.ki * err
        if self.integ > self.limit:
            self.integ = self.limit
        elif self.integ < -self.limit:
            self.integ = -self.limit
        self.u = self.integ + self.kp * err
        if self.u > self.limit:
            self.u = self.limit
        elif self.u < -self.limit:
            self.u = -self.limit
        self.ema += (self.u - self.ema) / 30.0
        return self.u

    @property
    def offset(self) -> float:
        """The step offset in force (dimensionless)."""
        return self.u

    @property
    def average(self) -> float:
        """The step offset averaged over about 30 s."""
        return self.ema

    @property
    def max_level(self) -> int:
        """The largest FIFO count seen since the first settled block."""
        return self.max_level

    @property
    def target_level(self) -> float:
        return self.target if self.have_target else -1.0

    @property
    def settled(self) -> bool:
        return self.have_target


cdef class DriftCompensator:
    """Both directions of one stream: a controller and a resampler each."""

    def __init__(self, int frame_samples=160, bint playback=True, bint capture=True):
        """Control the playback and/or capture side (only where a sound card's clock is on the
        other side of the FIFO: a side that is off passes frames through untouched)."""
        self.frame_samples = frame_samples
        self.play_on = playback
        self.cap_on = capture
        self.play_rs = Resampler()
        self.cap_rs = Resampler()
        self.play_ctl = FillControl()
        self.cap_ctl = FillControl()
        # the continuous level, read just before the loop's own transfer, comes down to the
        # FIFO's count when the card has just moved a period: a quarter frame left over for
        # playback, and for capture a whole frame plus the interpolator's lookahead more
        self.play_ctl.floor = frame_samples // 4
        self.cap_ctl.floor = 2 * frame_samples + frame_samples // 4

    cdef int playback_c(self, const int16_t *frame, int16_t *out, int level,
                        int64_t since_ns) noexcept nogil:
        """One frame from the loop into ``out`` (room for 2 * frame_samples + 8): the count.

        ``level`` is the playback FIFO's count, ``since_ns`` the time since the card last took
        samples from it (0: unknown).
        """
        cdef int fs = self.frame_samples
        cdef double u
        if not self.play_on:
            memcpy(out, frame, fs * sizeof(int16_t))
            return fs
        if since_ns < 0 or since_ns > STALE_NS:
            since_ns = 0
        if self.blocks_settled(self.play_ctl) and level > self.play_ctl.max_level:
            self.play_ctl.max_level = level
        u = self.play_ctl.tick_c(level - since_ns * 8e-6)  # what the card still has to play
        self.play_rs.push_c(frame, fs)
        return self.play_rs.produce_c(out, fs + 8, 1.0 + u)

    cdef inline bint blocks_settled(self, FillControl c) noexcept nogil:
        return c.blocks >= c.warmup

    cdef int capture_need_c(self, int level, int64_t since_ns) noexcept nogil:
        """Card samples to take from the capture FIFO this tick (ticks the controller).

        ``since_ns`` is the time since the card last delivered samples (0: unknown). Nothing is
        taken until the FIFO holds the controller's floor.
        """
        cdef int fs = self.frame_samples
        cdef double u
        if since_ns < 0 or since_ns > STALE_NS:
            since_ns = 0
        if self.blocks_settled(self.cap_ctl) and level > self.cap_ctl.max_level:
            self.cap_ctl.max_level = level
        if not self.cap_on:
            return fs
        u = self.cap_ctl.tick_c(level + since_ns * 8e-6)  # what the card has captured
        self.cap_step = 1.0 + u
        if not self.cap_started:
            if level + since_ns * 8e-6 < self.cap_ctl.floor:
                return 0
            self.cap_started = True
        return self.cap_rs.needed_c(fs, self.cap_step)

    cdef int capture_c(self, int16_t *frame, int16_t *raw, int got) noexcept nogil:
        """The ``got`` card samples taken (of ``capture_need_c``'s count; the rest of ``raw``
        is silence) into one frame: returns frame_samples, or less when samples were missing."""
        cdef int fs = self.frame_samples
        cdef int need
        if not self.cap_on:
            memcpy(frame, raw, got * sizeof(int16_t))
            if got < fs:
                memset(frame + got, 0, (fs - got) * sizeof(int16_t))
            return got
        if not self.cap_started:  # filling the cushion: silence, not an underrun
            memset(frame, 0, fs * sizeof(int16_t))
            return fs
        need = self.cap_rs.needed_c(fs, self.cap_step)
        if got < need:
            memset(raw + got, 0, (need - got) * sizeof(int16_t))
        self.cap_rs.push_c(raw, need)
        self.cap_rs.produce_c(frame, fs, self.cap_step)
        return fs if got >= need else got

    def drift_ppm(self) -> float:
        """The card's rate against the loop's, in ppm (positive: the card runs fast)."""
        cdef int n = 0
        cdef double total = 0
        if self.cap_on and self.cap_ctl.blocks > self.cap_ctl.warmup and self.cap_started:
            total += self.cap_ctl.ema
            n += 1
        if self.play_on and self.play_ctl.blocks > self.play_ctl.warmup:
            total -= self.play_ctl.ema
            n += 1
        return round(total / n * 1e6, 1) if n else 0.0

    def stats(self) -> dict:
        return {
            "drift_ppm": self.drift_ppm(),
            "playback_drift_ppm": round(-self.play_ctl.ema * 1e6, 1),
            "capture_drift_ppm": round(self.cap_ctl.ema * 1e6, 1),
            "playback_fifo_max_ms": self.play_ctl.max_level / 8.0,
            "capture_fifo_max_ms": self.cap_ctl.max_level / 8.0,
        }

    # ------------------------------------------------------------------ Python face (tests)
    def playback(self, frame, int level, long long since_ns=0) -> bytes:
        """One loop frame (PCM bytes) given the playback FIFO's state: the PCM to push."""
        cdef const unsigned char[::1] mv = frame
        cdef int16_t src[320]
        cdef int16_t out[648]
        cdef int n, i
        if mv.shape[0] != self.frame_samples * 2 or self.frame_samples > 320:
            raise ValueError("one frame of PCM expected")
        for i in range(self.frame_samples):
            src[i] = <int16_t>(mv[2 * i] | (mv[2 * i + 1] << 8))
        n = self.playback_c(src, out, level, since_ns)
        return PyBytes_FromStringAndSize(<char *>out, n * 2)

    def capture_need(self, int level, long long since_ns=0) -> int:
        """Card samples to read from the capture FIFO this tick."""
        return self.capture_need_c(level, since_ns)

    def capture(self, raw) -> tuple:
        """The card samples read (bytes) into one loop frame: (PCM bytes, valid samples)."""
        cdef const unsigned char[::1] mv = raw
        cdef int16_t buf[RS_BUF]
        cdef int16_t frame[320]
        cdef int got = mv.shape[0] // 2
        cdef int i, n
        if got > RS_BUF:
            got = RS_BUF
        for i in range(got):
            buf[i] = <int16_t>(mv[2 * i] | (mv[2 * i + 1] << 8))
        n = self.capture_c(frame, buf, got)
        return PyBytes_FromStringAndSize(<char *>frame, self.frame_samples * 2), n


cdef int64_t SLIP_SETTLE_NS = 1000000000  # the card's first second: its start, not its rate


cdef class ClockSlip:
    """The card-clocked loop against the network's clock, one tick per captured frame.

    Each tick consumes one frame from the jitter buffer; the far end fills it at its own pace,
    here taken as CLOCK_MONOTONIC's. ``tick_c`` counts the ticks against the monotonic time
    since the first and returns a slip when the difference, less the slips already asked for,
    reaches one frame: +1 (the card runs fast: hold the playout one period), -1 (it runs
    slow: drop a frame), else 0. The wake-up's jitter (a few ms) stays far below the frame
    it takes to slip, so slips do not flap. ``ppm`` is the card's own rate: the samples read
    from it against the monotonic time, from the end of its first second (positive: the card
    runs fast; ticks without a period, on the monotonic clock, count no samples).
    """

    def __init__(self, int frame_samples=160):
        self.frame_samples = frame_samples

    cdef int tick_c(self, int64_t now_ns, int samples) noexcept nogil:
        cdef double frames_net, debt
        self.ticks += 1
        self.samples += samples
        self.last_ns = now_ns
        if self.start_ns == 0:
            self.start_ns = now_ns
            self.anchor_ns = now_ns
            self.anchor_samples = self.samples
            return 0
        if self.anchor_ns == self.start_ns and now_ns - self.start_ns >= SLIP_SETTLE_NS:
            self.anchor_ns = now_ns  # the rate from here: the start's phase is not a rate
            self.anchor_samples = self.samples
        # frames the network delivered since the first tick against frames consumed
        frames_net = (now_ns - self.start_ns) * 8e-6 / self.frame_samples
        debt = (self.ticks - 1) - frames_net - self.slips
        if debt >= 1.0:
            self.slips += 1
            return 1
        if debt <= -1.0:
            self.slips -= 1
            return -1
        return 0

    def tick(self, long long now_ns, int samples=-1) -> int:
        """One tick at ``now_ns`` (a virtual clock in tests) with ``samples`` read from the
        card (a frame when -1): the slip to make (+1, -1, 0)."""
        return self.tick_c(now_ns, self.frame_samples if samples < 0 else samples)

    @property
    def ppm(self) -> float:
        """The card's rate against the monotonic clock (0 until a second has been seen)."""
        cdef double span = (self.last_ns - self.anchor_ns) * 1e-9
        if self.anchor_ns == self.start_ns or span < 1.0:
            return 0.0
        return round(((self.samples - self.anchor_samples) / 8000.0 / span - 1.0) * 1e6, 1)
