# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Packet-loss concealment for received G.711 audio, in the manner of ITU-T G.711 Appendix I.

Owns one direction's concealment state: the history of what was played, a pitch estimate taken
on it when a loss begins, the repeated pitch periods and the merge back into received audio. It
runs inside the 20 ms loop without the GIL and knows nothing of RTP, sockets or the jitter
buffer: the caller says, frame by frame, "this one arrived" (``good_c``) or "this one is missing"
(``conceal_c``).

What it does, and why (a frame is 20 ms, 160 samples at 8 kHz, but any size works):

* At the start of a loss the pitch period P (40..120 samples, 66-200 Hz) is the lag whose
  segment best matches the last 20 ms played (normalised cross-correlation). Repeating the last
  P samples then continues the waveform instead of restarting a 20 ms frame, which is what made
  the old repeat-and-fade buzz at 50 Hz and click at every frame edge for a 1013 Hz tone.
* The wrap of the repeated period is smoothed by overlap-adding its last P/4 samples with the
  P/4 samples one period earlier; the first join (last real sample -> first repeated sample) by
  a small offset that decays over P/4 samples, since the played audio cannot be changed.
* After 10 ms and 20 ms of loss two, then three, periods are repeated (crossfaded over P/4) so
  longer losses do not turn into a buzz; from 10 ms on the output fades by 20 % per 10 ms and is
  silent after 60 ms.
* The first received frame after a loss is merged: its start is crossfaded with the concealment's
  continuation over P/4 samples (plus 4 ms per further 10 ms once the loss exceeds 20 ms;
  measured on speech, a longer merge after a single lost frame scores lower).
* When the frame after the gap is already in the jitter buffer (``conceal_towards_c``: the
  usual case for an isolated loss, since the buffer holds 40 ms), the gap is bridged instead of
  extrapolated: the forward continuation above is crossfaded (raised cosine over the whole gap)
  into a backward continuation of the future frame (its own pitch period, found on it,
  repeated backwards, the period wrap overlap-added and the join into the frame corrected by a
  decaying offset, faded by the same rule with the distance to the frame). The future frame is
  then played untouched: no merge distortion in the first good frame, and the gap ends where
  the speech actually goes (a level or spectral change across the loss is followed, not
  guessed). If the plan is abandoned (the missing frame arrives late after all, or the future
  frame vanishes on a resync), what it would have played next is crossfaded out over P/4.
"""

from libc.math cimport cos, sqrt
from libc.stdint cimport int16_t
from libc.string cimport memcpy, memmove, memset


cdef inline int16_t _clip(float v) noexcept nogil:
    if v >= 32767.0:
        return 32767
    if v <= -32768.0:
        return -32768
    return <int16_t>(v + 0.5 if v >= 0 else v - 0.5)


cdef inline float _gain(int t) noexcept nogil:
    """Gain of the concealment ``t`` samples into a loss: 1 for 10 ms, then -20 % per 10 ms."""
    if t < 80:
        return 1.0
    if t >= 480:
        return 0.0
    return 1.0 - (t - 80) / 400.0


cdef class PitchConcealer(Concealer):
    """One direction's loss concealment: ``good(frame)`` for received audio (the first one after
    a loss comes back merged), ``conceal(n)`` for a missing frame."""

    def __cinit__(self):
        self.reset()

    def reset(self) -> None:
        memset(self.hist, 0, sizeof(self.hist))
        self.erased = 0
        self.pitch = PLC_PITCH_MIN
        self.ola = PLC_PITCH_MIN // 4
        self.pos = self.plen = self.old_pos = self.old_plen = 0
        self.fade_left = self.offset_left = 0
        self.offset = 0.0
        self.good_frames = self.concealed_frames = self.merges = self.bridged_frames = 0
        self.plan_len = self.plan_pos = self.carry_len = self.carry_pos = self.expect_len = 0

    cdef void _push_hist(self, const int16_t *pcm, int n) noexcept nogil:
        # kept as the samples themselves: every frame costs two copies, and the conversion to
        # float (exact for 16-bit values) is paid only when a loss begins
        if n >= PLC_HIST:
            memcpy(&self.hist[0], &pcm[n - PLC_HIST], PLC_HIST * sizeof(int16_t))
            return
        memmove(&self.hist[0], &self.hist[n], (PLC_HIST - n) * sizeof(int16_t))
        memcpy(&self.hist[PLC_HIST - n], pcm, n * sizeof(int16_t))

    cdef int _find_pitch(self) noexcept nogil:
        """The lag in [PITCH_MIN, PITCH_MAX] whose segment best matches the last CORR_LEN."""
        cdef const float *x = &self.base[PLC_HIST - PLC_CORR_LEN]
        cdef double c, e = 0.0, score, best = -1.0
        cdef int lag, i, best_lag = PLC_PITCH_MIN
        for i in range(PLC_CORR_LEN):
            e += <double>x[i - PLC_PITCH_MIN] * x[i - PLC_PITCH_MIN]
        for lag in range(PLC_PITCH_MIN, PLC_PITCH_MAX + 1):
            if lag > PLC_PITCH_MIN:  # slide the energy window one sample back
                e += <double>x[-lag] * x[-lag]
                e -= <double>x[PLC_CORR_LEN - lag] * x[PLC_CORR_LEN - lag]
            c = 0.0
            for i in range(PLC_CORR_LEN):
                c += <double>x[i] * x[i - lag]
            if c <= 0.0 or e < 1.0:
                continue
            score = c * c / e
            if score > best:
                best, best_lag = score, lag
        return best_lag

    cdef void _build(self, float *buf, int periods) noexcept nogil:
        """The last ``periods`` pitch periods of the history, the wrap overlap-added."""
        cdef int k, p = self.pitch, plen = periods * self.pitch, L = self.ola
        cdef int n0 = PLC_HIST - plen
        cdef float w
        for k in range(plen):
            buf[k] = self.base[n0 + k]
        # the tail becomes the tail one period earlier, so buf[plen-1] -> buf[0] is continuous
        for k in range(L):
            w = (k + 1.0) / (L + 1.0)
            buf[plen - L + k] = (1.0 - w) * self.base[PLC_HIST - L + k] + \
                w * self.base[n0 - L + k]
        self.plen = plen

    cdef float _next(self) noexcept nogil:
        cdef float v = self.pbuf[self.pos], w
        self.pos += 1
        if self.pos >= self.plen:
            self.pos = 0
        if self.fade_left > 0:
            w = self.fade_left / (self.ola + 1.0)
            v = w * self.old_pbuf[self.old_pos] + (1.0 - w) * v
            self.old_pos += 1
            if self.old_pos >= self.old_plen:
                self.old_pos = 0
            self.fade_left -= 1
        if self.offset_left > 0:
            v += self.offset * self.offset_left / (self.ola + 1.0)
            self.offset_left -= 1
        return v

    cdef void _start_loss(self) noexcept nogil:
        cdef int i
        for i in range(PLC_HIST):
            self.base[i] = self.hist[i]
        self.pitch = self._find_pitch()
        self.ola = self.pitch // 4
        self._build(self.pbuf, 1)
        self.pos = 0
        self.fade_left = 0
        # first join: the last real sample should be followed as base[-P] follows base[-P-1]
        self.offset = self.base[PLC_HIST - 1] - self.base[PLC_HIST - self.pitch - 1]
        self.offset_left = self.ola

    cdef float _forward(self) noexcept nogil:
        """The next sample of the forward (pitch repetition) concealment, faded."""
        cdef int t = self.erased, periods
        if t == 80 or t == 160:  # 10 and 20 ms: repeat one more period, crossfaded
            periods = 2 if t == 80 else 3
            memcpy(&self.old_pbuf[0], &self.pbuf[0], self.plen * sizeof(float))
            self.old_plen, self.old_pos = self.plen, self.pos
            self._build(self.pbuf, periods)
            # the same phase one period earlier: the new buffer starts P earlier
            self.pos = self.old_pos
            self.fade_left = self.ola
        self.erased += 1
        return self._next() * _gain(t)

    cdef float _from_carry(self, float v) noexcept nogil:
        """``v`` crossfaded from an abandoned plan's continuation while one is fading out."""
        cdef float w
        if self.carry_pos >= self.carry_len:
            return v
        w = (self.carry_pos + 1.0) / (self.carry_len + 1.0)
        v = w * v + (1.0 - w) * self.carry[self.carry_pos]
        self.carry_pos += 1
        return v

    cdef void _drop_plan(self) noexcept nogil:
        """Abandon the plan: what it would have played next fades out over P/4."""
        cdef int k, m = self.plan_len - self.plan_pos
        if m > self.ola:
            m = self.ola
        for k in range(m):
            self.carry[k] = self.plan[self.plan_pos + k]
        self.carry_len, self.carry_pos = m, 0
        self.plan_len = self.plan_pos = 0

    cdef int _future_pitch(self, const int16_t *fut, int n) noexcept nogil:
        """The pitch lag of the future frame itself (normalised correlation within it)."""
        cdef double c, ea, eb, score, best = -1.0
        cdef int lag, i, w, best_lag = self.pitch
        for lag in range(PLC_PITCH_MIN, PLC_PITCH_MAX + 1):
            w = n - lag
            if w > PLC_CORR_LEN:
                w = PLC_CORR_LEN
            c = ea = eb = 0.0
            for i in range(w):
                c += <double>fut[i] * fut[i + lag]
                ea += <double>fut[i] * fut[i]
                eb += <double>fut[i + lag] * fut[i + lag]
            if c <= 0.0 or ea * eb < 1.0:
                continue
            score = c * c / (ea * eb)
            if score > best:
                best, best_lag = score, lag
        return best_lag

    cdef void _plan(self, const int16_t *fut, int n, int total) noexcept nogil:
        """``total`` samples from the past into ``fut``: forward and backward continuations
        crossfaded over the whole gap."""
        cdef float q[PLC_PITCH_MAX]
        cdef int i, j, d, p, lw
        cdef float w, b, off
        for i in range(total):
            self.plan[i] = self._forward()
        p = self._future_pitch(fut, n)
        lw = p // 4
        # one period of the future frame, its head blended into the samples one period on so
        # that repeating it backwards wraps smoothly (the mirror of _build)
        for j in range(p):
            q[j] = fut[j]
        for j in range(lw):
            w = (j + 1.0) / (lw + 1.0)
            q[j] = (1.0 - w) * fut[p + j] + w * fut[j]
        off = <float>fut[0] - <float>fut[p]
        for i in range(total):
            d = total - 1 - i  # samples before the future frame
            b = q[p - 1 - d % p]
            if d < lw:  # the last join: fut[p-1] -> fut[0] made to step like fut[p-1] -> fut[p]
                b += off * (1.0 - (d + 1.0) / (lw + 1.0))
            w = <float>(0.5 - 0.5 * cos(3.141592653589793 * (i + 0.5) / total))
            self.plan[i] = (1.0 - w) * self.plan[i] + w * _gain(d) * b
        for j in range(lw):
            self.expect[j] = fut[j]
        self.expect_len = lw
        self.plan_len, self.plan_pos = total, 0

    cdef void conceal_c(self, int16_t *pcm, int n) noexcept nogil:
        """Fill a missing frame of ``n`` samples (nothing known of what follows)."""
        cdef int i
        if self.good_frames == 0:  # nothing heard yet: nothing to continue
            memset(pcm, 0, n * sizeof(int16_t))
            return
        if self.plan_len:
            self._drop_plan()
        if self.erased == 0:
            self._start_loss()
        for i in range(n):
            pcm[i] = _clip(self._from_carry(self._forward()))
        self._push_hist(pcm, n)
        self.concealed_frames += 1

    cdef void conceal_towards_c(self, int16_t *pcm, int n, const int16_t *future,
                                int gap) noexcept nogil:
        """Fill a missing frame of ``n`` samples when ``future`` (``n`` samples) is the frame
        ``gap`` frames on (1: the next one): the gap is planned once, then played out."""
        cdef int i, total = gap * n
        if self.good_frames == 0 or gap < 1 or total > PLC_PLAN or n < PLC_CORR_LEN:
            self.conceal_c(pcm, n)
            return
        if not (self.plan_len and self.plan_len - self.plan_pos == total):
            if self.plan_len:  # a different gap than planned (the buffer grew): plan again
                self._drop_plan()
            if self.erased == 0:
                self._start_loss()
            self._plan(future, n, total)
        for i in range(n):
            pcm[i] = _clip(self._from_carry(self.plan[self.plan_pos + i]))
        self.plan_pos += n
        if self.plan_pos == self.plan_len:  # next comes the future frame: fade into it
            for i in range(self.expect_len):
                self.carry[i] = self.expect[i]
            self.carry_len, self.carry_pos = self.expect_len, 0
        self._push_hist(pcm, n)
        self.concealed_frames += 1
        self.bridged_frames += 1

    cdef void good_c(self, int16_t *pcm, int n) noexcept nogil:
        """A received frame: merged with the concealment if a loss just ended, then remembered."""
        cdef int k, m
        cdef float w
        if self.plan_len:
            # a bridged gap: the frame it led into arrives (the carry holds that frame's own
            # start, so the fade is a no-op) or a frame inside the gap came after all
            if self.plan_pos < self.plan_len:
                self._drop_plan()
            self.plan_len = self.plan_pos = 0
            self.erased = 0
            self.merges += 1
        elif self.erased > 0:
            # one lost frame: P/4; from 30 ms of loss on, 4 ms more per further 10 ms
            m = self.ola + (self.erased // 80 - 1) * 32 if self.erased > 160 else self.ola
            if m > n:
                m = n
            for k in range(m):
                w = (k + 1.0) / (m + 1.0)
                pcm[k] = _clip(w * pcm[k] + (1.0 - w) * self._next() * _gain(self.erased + k))
            self.erased = 0
            self.merges += 1
        k = 0
        while self.carry_pos < self.carry_len and k < n:
            pcm[k] = _clip(self._from_carry(pcm[k]))
            k += 1
        self._push_hist(pcm, n)
        self.good_frames += 1

    # ------------------------------------------------------------------ Python face (tests, tools)
    def good(self, pcm) -> bytes:
        """A received frame (16-bit little-endian mono); returns it as it is to be played."""
        cdef bytearray buf = bytearray(pcm)
        cdef int n = len(buf) // 2
        if n == 0 or len(buf) % 2:
            raise ValueError("a frame is a whole number of 16-bit samples, at least one")
        cdef unsigned char[::1] mv = buf
        self.good_c(<int16_t *>&mv[0], n)
        return bytes(buf)

    def conceal(self, int n=160) -> bytes:
        """The concealment for a missing frame of ``n`` samples."""
        if n <= 0 or n > 4800:
            raise ValueError("frame size must be 1..4800 samples")
        cdef bytearray buf = bytearray(2 * n)
        cdef unsigned char[::1] mv = buf
        self.conceal_c(<int16_t *>&mv[0], n)
        return bytes(buf)

    @property
    def pitch_lag(self) -> int:
        """The pitch period (samples) chosen at the start of the latest loss."""
        return self.pitch
