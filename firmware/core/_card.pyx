# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""One sound card as the media loop drives it: a capture PCM and a playback PCM through
alsa-lib, without the GIL.

Owns opening both PCMs by name (``SND_PCM_NONBLOCK``, S16_LE, mono, 8000 Hz through whatever
conversion the name's plugins do: ``plughw:CARD=<id>,DEV=0`` on a box), their period and buffer
sizes (capture: 20 ms periods; playback: 10 ms periods, a few of them, started behind a short
prefill of silence: the playback buffer is the delay to the speaker), waiting for a capture
period (``poll`` on the capture PCM's descriptors), reading and writing periods, the playback
queue (``snd_pcm_delay``) and what capture left waiting, xrun recovery (``snd_pcm_recover``,
prepare, start, prefill: counted per side) and telling a card that went (ENODEV, EBADFD, an
error on its descriptors: ``gone``, the errno kept). A device that cannot be opened is one
``CardError`` naming it and alsa-lib's reason. Knows nothing about RTP, the loop's clock, FIFOs
or Python threads: the caller decides when to wait, read and write.
"""

from libc.stdint cimport int16_t, int64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from libc.string cimport memset
from libc.errno cimport errno, EAGAIN, EPIPE, EINTR, ENODEV, EBADFD, EIO

cdef extern from "<errno.h>" nogil:
    int ESTRPIPE

cdef extern from "<poll.h>" nogil:
    int poll(pollfd *, unsigned long, int)
    short POLLIN, POLLERR, POLLHUP, POLLNVAL

cdef extern from "<alsa/asoundlib.h>" nogil:
    ctypedef struct snd_pcm_hw_params_t:
        pass
    ctypedef struct snd_pcm_sw_params_t:
        pass
    ctypedef enum snd_pcm_stream_t:
        SND_PCM_STREAM_PLAYBACK
        SND_PCM_STREAM_CAPTURE
    ctypedef enum snd_pcm_access_t:
        SND_PCM_ACCESS_RW_INTERLEAVED
    ctypedef enum snd_pcm_format_t:
        SND_PCM_FORMAT_S16_LE
    ctypedef enum snd_pcm_state_t:
        SND_PCM_STATE_RUNNING
        SND_PCM_STATE_XRUN
        SND_PCM_STATE_SUSPENDED
        SND_PCM_STATE_DISCONNECTED
    int SND_PCM_NONBLOCK
    const char *snd_strerror(int)
    int snd_pcm_open(snd_pcm_t **, const char *, snd_pcm_stream_t, int)
    int snd_pcm_close(snd_pcm_t *)
    int snd_pcm_hw_params_malloc(snd_pcm_hw_params_t **)
    void snd_pcm_hw_params_free(snd_pcm_hw_params_t *)
    int snd_pcm_hw_params_any(snd_pcm_t *, snd_pcm_hw_params_t *)
    int snd_pcm_hw_params_set_access(snd_pcm_t *, snd_pcm_hw_params_t *, snd_pcm_access_t)
    int snd_pcm_hw_params_set_format(snd_pcm_t *, snd_pcm_hw_params_t *, snd_pcm_format_t)
    int snd_pcm_hw_params_set_channels(snd_pcm_t *, snd_pcm_hw_params_t *, unsigned int)
    int snd_pcm_hw_params_set_rate(snd_pcm_t *, snd_pcm_hw_params_t *, unsigned int, int)
    int snd_pcm_hw_params_set_period_size_near(snd_pcm_t *, snd_pcm_hw_params_t *,
                                               snd_pcm_uframes_t *, int *)
    int snd_pcm_hw_params_set_buffer_size_near(snd_pcm_t *, snd_pcm_hw_params_t *,
                                               snd_pcm_uframes_t *)
    int snd_pcm_hw_params(snd_pcm_t *, snd_pcm_hw_params_t *)
    int snd_pcm_sw_params_malloc(snd_pcm_sw_params_t **)
    void snd_pcm_sw_params_free(snd_pcm_sw_params_t *)
    int snd_pcm_sw_params_current(snd_pcm_t *, snd_pcm_sw_params_t *)
    int snd_pcm_sw_params_set_start_threshold(snd_pcm_t *, snd_pcm_sw_params_t *,
                                              snd_pcm_uframes_t)
    int snd_pcm_sw_params_set_avail_min(snd_pcm_t *, snd_pcm_sw_params_t *, snd_pcm_uframes_t)
    int snd_pcm_sw_params(snd_pcm_t *, snd_pcm_sw_params_t *)
    int snd_pcm_prepare(snd_pcm_t *)
    int snd_pcm_start(snd_pcm_t *)
    int snd_pcm_drop(snd_pcm_t *)
    int snd_pcm_recover(snd_pcm_t *, int, int)
    snd_pcm_state_t snd_pcm_state(snd_pcm_t *)
    snd_pcm_sframes_t snd_pcm_readi(snd_pcm_t *, void *, snd_pcm_uframes_t)
    snd_pcm_sframes_t snd_pcm_writei(snd_pcm_t *, const void *, snd_pcm_uframes_t)
    int snd_pcm_delay(snd_pcm_t *, snd_pcm_sframes_t *)
    snd_pcm_sframes_t snd_pcm_avail_update(snd_pcm_t *)
    snd_pcm_sframes_t snd_pcm_avail(snd_pcm_t *)
    int snd_pcm_poll_descriptors_count(snd_pcm_t *)
    int snd_pcm_poll_descriptors(snd_pcm_t *, pollfd *, unsigned int)
    int snd_pcm_poll_descriptors_revents(snd_pcm_t *, pollfd *, unsigned int, unsigned short *)

cdef enum:
    _RATE = 8000
RATE = _RATE


cdef inline int64_t _ms_now() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000 + t.tv_nsec // 1000000


class CardError(OSError):
    """A sound card that cannot be opened or set up: one line naming the device and why
    (``errno`` alsa-lib's error)."""

    def __init__(self, int err, str message):
        super().__init__(message)
        self.errno = err

    def __str__(self) -> str:
        return self.args[0]


cdef str _why(int err):
    return (<bytes>snd_strerror(err)).decode("utf-8", "replace")


_STEPS = ("open", "any", "access", "S16_LE", "mono", f"{RATE} Hz", "period", "buffer",
          "hw params", "sw params", "start threshold", "avail min", "sw params")


cdef int _setup_c(snd_pcm_t **out, const char *name, bint capture, int period,
                  snd_pcm_uframes_t *psize, snd_pcm_uframes_t *bsize, int *step) noexcept nogil:
    """Open ``name`` and set it up, all without the GIL: a plugin's open, set-up and close may
    wait on a server (alsa-lib's jack plugin waits for jackd's graph to change, and that may
    wait for a client of this very process that needs the GIL) or on a USB device that is
    going. 0 with the PCM in ``out``, or alsa-lib's error with ``step`` the call that failed
    (the PCM closed, ``out`` NULL)."""
    cdef snd_pcm_t *pcm = NULL
    cdef snd_pcm_hw_params_t *hw = NULL
    cdef snd_pcm_sw_params_t *sw = NULL
    cdef int dirn = 0
    cdef int rc
    out[0] = NULL
    step[0] = 0
    rc = snd_pcm_open(&pcm, name, SND_PCM_STREAM_CAPTURE if capture else SND_PCM_STREAM_PLAYBACK,
                      SND_PCM_NONBLOCK)
    if rc < 0:
        return rc
    snd_pcm_hw_params_malloc(&hw)
    snd_pcm_sw_params_malloc(&sw)
    step[0] = 1
    rc = snd_pcm_hw_params_any(pcm, hw)
    if rc >= 0:
        step[0] += 1
        rc = snd_pcm_hw_params_set_access(pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED)
    if rc >= 0:
        step[0] += 1
        rc = snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE)
    if rc >= 0:
        step[0] += 1
        rc = snd_pcm_hw_params_set_channels(pcm, hw, 1)
    if rc >= 0:
        step[0] += 1
        rc = snd_pcm_hw_params_set_rate(pcm, hw, _RATE, 0)
    if rc >= 0:
        step[0] += 1
        rc = snd_pcm_hw_params_set_period_size_near(pcm, hw, psize, &dirn)
    if rc >= 0:
        step[0] += 1
        rc = snd_pcm_hw_params_set_buffer_size_near(pcm, hw, bsize)
    if rc >= 0:
        step[0] += 1
        rc = snd_pcm_hw_params(pcm, hw)
    if rc >= 0:
        step[0] += 1
        rc = snd_pcm_sw_params_current(pcm, sw)
    if rc >= 0:
        step[0] += 1
        # started by the caller (after the prefill on playback), never by a write or read
        rc = snd_pcm_sw_params_set_start_threshold(pcm, sw, bsize[0] * 2)
    if rc >= 0:
        step[0] += 1
        rc = snd_pcm_sw_params_set_avail_min(pcm, sw, period if capture else psize[0])
    if rc >= 0:
        step[0] += 1
        rc = snd_pcm_sw_params(pcm, sw)
    if hw != NULL:
        snd_pcm_hw_params_free(hw)
    if sw != NULL:
        snd_pcm_sw_params_free(sw)
    if rc < 0:
        snd_pcm_close(pcm)
        return rc
    out[0] = pcm
    return 0


cdef snd_pcm_t *_open(str name, bint capture, int period, int periods,
                      snd_pcm_uframes_t *buffer_out) except NULL:
    """One PCM opened and set up, or CardError."""
    cdef snd_pcm_t *pcm = NULL
    cdef snd_pcm_uframes_t psize = period, bsize = period * periods
    cdef int rc, step = 0
    cdef bytes bname = name.encode()
    cdef const char *cname = bname
    with nogil:
        rc = _setup_c(&pcm, cname, capture, period, &psize, &bsize, &step)
    what = "capture" if capture else "playback"
    if rc < 0 and step == 0:
        raise CardError(-rc, f"ALSA {what} device {name!r} cannot be opened: {_why(rc)}")
    if rc < 0:
        raise CardError(-rc, f"ALSA {what} device {name!r} refuses {_STEPS[step]}: {_why(rc)}")
    buffer_out[0] = bsize
    return pcm


cdef void _close_c(snd_pcm_t *pcm) noexcept nogil:
    if pcm != NULL:
        snd_pcm_close(pcm)


cdef class Card:
    """A capture PCM and a playback PCM (the same card or two), opened on construction.

    ``start_c`` prepares both, fills the playback buffer with ``prefill`` samples of silence
    and starts both. The loop then waits for each capture period (``wait_c``), reads it
    (``read_c``) and writes what it plays (``write_c``). Errors inside are recovered (xrun,
    counted) or make the card ``gone`` (its errno in ``error``); a gone card does nothing
    more. ``close()`` from Python (never from the loop) releases the PCMs.
    """

    def __cinit__(self):
        self.cap = NULL
        self.play = NULL

    def __init__(self, str capture, str playback, int period=CARD_PERIOD,
                 int play_period=CARD_PLAY_PERIOD, int play_periods=CARD_PLAY_PERIODS,
                 int prefill=CARD_PREFILL):
        cdef snd_pcm_uframes_t cb = 0, pb = 0
        cdef int n
        if not 0 < period <= 4096 or not 0 < play_period <= 4096 or play_periods < 2:
            raise ValueError("periods out of range")
        self.capture_name = capture
        self.playback_name = playback
        self.period = period
        self.play_period = play_period
        self.cap = _open(capture, True, period, CARD_CAPTURE_PERIODS, &cb)
        try:
            self.play = _open(playback, False, play_period, play_periods, &pb)
        except BaseException:
            with nogil:
                _close_c(self.cap)
            self.cap = NULL
            raise
        self.cap_buffer = <int>cb
        self.play_buffer = <int>pb
        self.prefill = prefill if prefill + period <= self.play_buffer else \
            self.play_buffer - period
        if self.prefill < 0:
            self.prefill = 0
        n = snd_pcm_poll_descriptors_count(self.cap)
        if n < 1 or n > CARD_MAX_FDS:
            self.close()
            raise CardError(EIO, f"ALSA capture device {capture!r} has {n} poll descriptors")
        self.nfds = snd_pcm_poll_descriptors(self.cap, self.fds, n)

    def __dealloc__(self):
        self._release()

    def close(self) -> None:
        """Release both PCMs (from Python, once the loop no longer uses this card)."""
        self.gone = True
        self._release()

    cdef void _release(self) noexcept:
        """Both PCMs closed without the GIL: a plugin's close may wait on its server (see
        ``_setup_c``)."""
        cdef snd_pcm_t *cap = self.cap
        cdef snd_pcm_t *play = self.play
        self.cap = self.play = NULL
        with nogil:
            _close_c(cap)
            _close_c(play)

    @property
    def closed(self) -> bool:
        return self.cap == NULL

    # ------------------------------------------------------------------ the loop's side
    cdef void mark_gone_c(self, int err) noexcept nogil:
        if not self.gone:
            self.gone = True
            self.error = err

    cdef int _prefill_c(self) noexcept nogil:
        cdef int16_t silence[CARD_PERIOD]
        cdef int left = self.prefill, n
        cdef snd_pcm_sframes_t rc
        memset(silence, 0, sizeof(silence))
        while left > 0:
            n = left if left < CARD_PERIOD else CARD_PERIOD
            rc = snd_pcm_writei(self.play, silence, n)
            if rc < 0:
                return <int>rc
            left -= <int>rc
        return 0

    cdef int start_c(self) noexcept nogil:
        """Prepare both sides and start capture: 0, or the card is gone. Playback starts with
        the first write (behind the prefill), so its queue is the same at every later write
        whatever capture's first period took."""
        cdef int rc
        if self.gone or self.cap == NULL:
            return -1
        snd_pcm_drop(self.cap)
        snd_pcm_drop(self.play)
        self.play_running = False
        rc = snd_pcm_prepare(self.play)
        if rc >= 0:
            rc = snd_pcm_prepare(self.cap)
        if rc >= 0:
            rc = snd_pcm_start(self.cap)
        if rc < 0:
            self.mark_gone_c(-rc)
            return -1
        self.started = True
        return 0

    cdef int _recover_c(self, snd_pcm_t *pcm, int err, bint capture) noexcept nogil:
        """An xrun (or a suspend): recovered and restarted (playback: at its next write, behind
        the prefill), counted; 0, or the card is gone."""
        cdef int rc
        if err == -EPIPE or err == -ESTRPIPE:
            if capture:
                self.capture_xruns += 1
            else:
                self.playback_xruns += 1
            rc = snd_pcm_recover(pcm, err, 1)
            if rc >= 0 and capture:
                rc = snd_pcm_start(pcm)
            if rc >= 0:
                if not capture:
                    self.play_running = False
                return 0
            err = rc
        self.mark_gone_c(-err)
        return -1

    cdef int wait_c(self, int timeout_ms) noexcept nogil:
        """Wait up to ``timeout_ms`` for a capture period: CARD_READY, CARD_TIMEOUT or
        CARD_GONE. An xrun found here is recovered (and reported ready: read says more)."""
        cdef int rc, i, left
        cdef unsigned short revents
        cdef snd_pcm_sframes_t avail
        cdef snd_pcm_state_t state
        cdef int64_t until = _ms_now() + (timeout_ms if timeout_ms > 0 else 0)
        if self.gone:
            return CARD_GONE
        while True:
            avail = snd_pcm_avail_update(self.cap)
            if avail >= self.period:
                return CARD_READY
            if avail < 0:
                return CARD_READY if self._recover_c(self.cap, <int>avail, True) == 0 \
                    else CARD_GONE
            left = <int>(until - _ms_now())
            if left < 0:
                return CARD_TIMEOUT
            for i in range(self.nfds):
                self.fds[i].revents = 0
            rc = poll(self.fds, self.nfds, left)
            if rc < 0:
                if errno == EINTR:
                    continue
                self.mark_gone_c(errno)
                return CARD_GONE
            if rc == 0:
                return CARD_TIMEOUT
            revents = 0
            if snd_pcm_poll_descriptors_revents(self.cap, self.fds, self.nfds, &revents) < 0:
                self.mark_gone_c(EIO)
                return CARD_GONE
            if revents & (POLLERR | POLLHUP | POLLNVAL):
                # an xrun shows as POLLERR too: only a PCM that is not in XRUN has failed. The
                # PCM's state says so, where the avail figure alone need not (the suspected
                # cause of an EIO "card gone" in 2 of 6 QEMU image boots on snd-hda-intel)
                state = snd_pcm_state(self.cap)
                if state == SND_PCM_STATE_XRUN:
                    avail = -EPIPE
                elif state == SND_PCM_STATE_SUSPENDED:
                    avail = -ESTRPIPE
                else:
                    avail = snd_pcm_avail_update(self.cap)
                if avail == -EPIPE or avail == -ESTRPIPE:
                    return CARD_READY if self._recover_c(self.cap, <int>avail, True) == 0 \
                        else CARD_GONE
                self.mark_gone_c(ENODEV if revents & POLLHUP else EIO)
                return CARD_GONE
            # POLLIN, or a wake-up the plugin says is not one yet: the loop checks avail

    cdef int read_c(self, int16_t *buf, int n) noexcept nogil:
        """Up to ``n`` captured samples into ``buf``: the count (0: none yet, or an xrun just
        recovered), -1 when the card is gone."""
        cdef snd_pcm_sframes_t rc
        if self.gone:
            return -1
        rc = snd_pcm_readi(self.cap, buf, n)
        if rc == -EAGAIN or rc == -EINTR:
            return 0
        if rc < 0:
            return 0 if self._recover_c(self.cap, <int>rc, True) == 0 else -1
        self.frames_read += <uint64_t>rc
        return <int>rc

    cdef int write_c(self, const int16_t *buf, int n) noexcept nogil:
        """``n`` samples to play: the count written (what found no room is dropped, counted),
        -1 when the card is gone. The first write (and the first after an underrun, which is
        recovered and counted) goes behind the prefill of silence and starts playback."""
        cdef snd_pcm_sframes_t rc
        cdef int done = 0, tries = 0
        if self.gone:
            return -1
        while done < n and tries < 3:
            tries += 1
            if not self.play_running:
                rc = self._prefill_c()
                if rc >= 0:
                    rc = snd_pcm_writei(self.play, buf, n)
                    if rc >= 0:
                        done = <int>rc
                        rc = snd_pcm_start(self.play)
                        if rc >= 0:
                            self.play_running = True
                            continue
            else:
                rc = snd_pcm_writei(self.play, buf + done, n - done)
                if rc >= 0:
                    done += <int>rc
                    continue
            if rc == -EAGAIN:
                break
            if rc == -EINTR:
                continue
            if self._recover_c(self.play, <int>rc, False) < 0:
                return -1
            done = 0
        self.frames_written += done
        if done < n:
            self.playback_dropped += n - done
        return done

    cdef long play_delay_c(self) noexcept nogil:
        """Samples queued ahead of the next one written (0 when unknown, or when the PCM is
        not running: an underrun some plugins leave standing — alsa-lib's jack plugin keeps
        its last delay — is then met by the next write, which recovers it)."""
        cdef snd_pcm_sframes_t d = 0
        if self.gone or snd_pcm_state(self.play) != SND_PCM_STATE_RUNNING:
            return 0
        if snd_pcm_delay(self.play, &d) < 0 or d < 0:
            return 0
        return d

    cdef long capture_avail_c(self) noexcept nogil:
        """Samples captured and still waiting to be read (0 when unknown)."""
        cdef snd_pcm_sframes_t a
        if self.gone:
            return 0
        a = snd_pcm_avail_update(self.cap)
        return a if a > 0 else 0

    # ------------------------------------------------------------------ Python face (tests)
    def start(self) -> bool:
        cdef int rc
        with nogil:
            rc = self.start_c()
        return rc == 0

    def wait(self, int timeout_ms) -> int:
        """CARD_READY (1), CARD_TIMEOUT (0) or CARD_GONE (-1)."""
        cdef int rc
        with nogil:
            rc = self.wait_c(timeout_ms)
        return rc

    def read(self, int n) -> bytes:
        """Up to ``n`` captured samples as little-endian PCM (b"" when none)."""
        cdef int16_t buf[4096]
        cdef int got
        if not 0 < n <= 4096:
            raise ValueError("1 to 4096 samples")
        with nogil:
            got = self.read_c(buf, n)
        return (<char *>buf)[:2 * got] if got > 0 else b""

    def write(self, pcm) -> int:
        """Little-endian PCM to play: samples written, -1 when the card is gone."""
        cdef const unsigned char[::1] mv = pcm
        cdef int n = mv.shape[0] // 2
        cdef int rc
        if n == 0:
            return 0
        with nogil:
            rc = self.write_c(<const int16_t *>&mv[0], n)
        return rc

    @property
    def play_delay(self) -> int:
        cdef long d
        with nogil:
            d = self.play_delay_c()
        return d

    @property
    def capture_avail(self) -> int:
        cdef long a
        with nogil:
            a = self.capture_avail_c()
        return a

    def stats(self) -> dict:
        return {"capture_xruns": self.capture_xruns, "playback_xruns": self.playback_xruns,
                "gone": bool(self.gone), "error": self.error,
                "playback_dropped": self.playback_dropped}
