# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Acoustic echo cancellers on the capture-processor hook: speexdsp and WebRTC's module.

Owns the two cancellers (subclasses of ``_processor.CaptureProcessor``, called by the media
loop without the GIL), the reference delay line that lines the far-end frames up with the
microphone frames that carry their echo, and choosing a canceller by name (``create``).

The delay line: ``playback_c`` stores every frame about to be played; ``capture_c`` estimates
the speaker-to-microphone delay as the playback FIFO's backlog + the capture FIFO's backlog +
the sound card's own buffers (``device_delay``, told by the caller), keeps ``margin`` (a
quarter of the tail) in hand for what it cannot see (the air, the card's real fill), and hands
the canceller the reference that far back. The estimate moves only when it stays off by more
than 20 ms for half a second, so one late tick does not make the filter re-converge.

WebRTC's module works on 10 ms (80-sample) blocks at 8 kHz. speexdsp takes the call's frame
whole when it is a multiple of 20 ms (160-sample blocks: half the calls into the library and
half the filter's partitions of the 10 ms block, about 40 % less CPU with the same ERLE), else
10 ms blocks; frames of 10/20/30/40 ms are cut into blocks. Knows nothing about RTP, sockets,
ALSA or configuration files.
"""

from libc.stdint cimport int16_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from firmware.core._processor cimport CaptureProcessor


cdef extern from "<speex/speex_echo.h>":
    ctypedef struct SpeexEchoState:
        pass
    SpeexEchoState *speex_echo_state_init(int frame_size, int filter_length)
    void speex_echo_state_destroy(SpeexEchoState *st)
    void speex_echo_cancellation(SpeexEchoState *st, const int16_t *rec, const int16_t *play,
                                 int16_t *out) nogil
    int speex_echo_ctl(SpeexEchoState *st, int request, void *ptr)
    int SPEEX_ECHO_SET_SAMPLING_RATE


cdef extern from "<speex/speex_preprocess.h>":
    ctypedef struct SpeexPreprocessState:
        pass
    SpeexPreprocessState *speex_preprocess_state_init(int frame_size, int sampling_rate)
    void speex_preprocess_state_destroy(SpeexPreprocessState *st)
    int speex_preprocess_run(SpeexPreprocessState *st, int16_t *x) nogil
    int speex_preprocess_ctl(SpeexPreprocessState *st, int request, void *ptr)
    int SPEEX_PREPROCESS_SET_DENOISE
    int SPEEX_PREPROCESS_SET_AGC
    int SPEEX_PREPROCESS_SET_AGC_LEVEL
    int SPEEX_PREPROCESS_SET_NOISE_SUPPRESS
    int SPEEX_PREPROCESS_SET_ECHO_STATE


cdef extern from "_webrtc_shim.h":
    ctypedef struct wap_state:
        pass
    wap_state *wap_new(int rate, int noise_suppression, int agc, char *err, int errlen)
    int wap_render(wap_state *st, const int16_t *pcm) nogil
    int wap_capture(wap_state *st, int16_t *pcm, int delay_ms) nogil
    void wap_free(wap_state *st)
    const char *wap_version()


DEF RATE = 8000
DEF BLOCK = 80          # 10 ms: WebRTC's block, and speex's for frames not of whole 20 ms
DEF MAX_BLOCK = 160     # 20 ms: speex's block for frames of 20/40/60 ms
DEF RING = 16384        # reference history: 2.048 s at 8 kHz (power of two)
DEF MASK = RING - 1
DEF MAX_TAIL_MS = 500
DEF MOVE_OFF = 160      # the delay estimate moves when off by more than 20 ms ...
DEF MOVE_FRAMES = 25    # ... for this many consecutive captured frames

KINDS = ("off", "speex", "webrtc")


class AecError(ValueError):
    """A canceller that cannot be built; the message names the cause in one line."""


cdef class EchoCanceller(CaptureProcessor):
    """The reference delay line both cancellers share; ``process_c`` is the algorithm."""

    cdef int16_t *ring
    cdef int64_t wpos
    cdef int play_queued
    cdef readonly int device_delay, tail, margin, delay, delay_changes, errors, block
    cdef readonly int64_t frames
    cdef int pending, pending_frames
    cdef int16_t ref[MAX_BLOCK]

    def __cinit__(self, *args, **kwargs):
        self.ring = <int16_t *>calloc(RING, sizeof(int16_t))
        if self.ring == NULL:
            raise MemoryError()

    def __init__(self, int tail_ms=128, int device_delay=0):
        if not 16 <= tail_ms <= MAX_TAIL_MS:
            raise AecError(f"echo tail must be between 16 and {MAX_TAIL_MS} ms, not {tail_ms}")
        if not 0 <= device_delay <= RING // 2:
            raise AecError(f"device delay must be between 0 and {RING // 2} samples")
        self.tail = tail_ms * (RATE // 1000)
        self.margin = self.tail // 4
        self.device_delay = device_delay
        self.block = BLOCK

    def __dealloc__(self):
        free(self.ring)

    cdef void playback_c(self, const int16_t *pcm, int n, int queued) noexcept nogil:
        cdef int i
        cdef int64_t w = self.wpos
        for i in range(n):
            self.ring[(w + i) & MASK] = pcm[i]
        self.wpos = w + n
        self.play_queued = queued if queued > 0 else 0

    cdef void _track(self, int n, int queued) noexcept nogil:
        cdef int target = self.play_queued + (queued if queued > 0 else 0) + self.device_delay
        target -= self.margin
        if target < 0:
            target = 0
        if target > RING - self.tail - 2 * 320:
            target = RING - self.tail - 2 * 320
        if self.frames < MOVE_FRAMES:
            # the first half second follows the queues as they fill (a card's playback starts
            # behind its prefill at the first write): a first figure read before then would
            # stand while the true one is less than MOVE_OFF away
            self.delay = target
            return
        # off by more than the margin the tail keeps in hand (20 ms at most) for half a second:
        # with a short tail a 20 ms error would leave the echo outside it for the call
        cdef int off = self.margin if self.margin < MOVE_OFF else MOVE_OFF
        if target - self.delay > off or self.delay - target > off:
            if self.pending_frames > 0 and (target - self.pending > off
                                            or self.pending - target > off):
                self.pending_frames = 0  # a different new value: start counting again
            if self.pending_frames == 0:
                self.pending = target
            self.pending_frames += 1
            if self.pending_frames >= MOVE_FRAMES:
                self.delay = target
                self.delay_changes += 1
                self.pending_frames = 0
        else:
            self.pending_frames = 0

    cdef void capture_c(self, int16_t *pcm, int n, int queued) noexcept nogil:
        cdef int off, i, b = self.block
        cdef int64_t start
        self._track(n, queued)
        off = 0
        while off + b <= n:
            # the reference played `delay` samples before this block was captured
            start = self.wpos - n + off - self.delay
            for i in range(b):
                self.ref[i] = self.ring[(start + i) & MASK] if start + i >= 0 else 0
            self.process_c(&pcm[off], self.ref)
            off += b
        self.frames += 1

    cdef void process_c(self, int16_t *mic, const int16_t *ref) noexcept nogil:
        pass

    @property
    def name(self) -> str:
        return "off"


cdef class SpeexCanceller(EchoCanceller):
    """speexdsp's multi-delay block filter + its preprocessor (residual echo suppression,
    optional noise suppression and AGC)."""

    cdef SpeexEchoState *echo
    cdef SpeexPreprocessState *pre
    cdef int16_t out[MAX_BLOCK]

    def __init__(self, int tail_ms=128, bint noise_suppression=False, bint agc=False,
                 int device_delay=0, int frame_samples=160):
        super().__init__(tail_ms, device_delay)
        cdef int rate = RATE, on = 1, off = 0, ns_db
        cdef float level = 8000.0
        self.block = MAX_BLOCK if frame_samples > 0 and frame_samples % MAX_BLOCK == 0 else BLOCK
        self.echo = speex_echo_state_init(self.block, self.tail)
        self.pre = speex_preprocess_state_init(self.block, RATE)
        if self.echo == NULL or self.pre == NULL:
            raise AecError("speexdsp could not allocate its echo canceller")
        speex_echo_ctl(self.echo, SPEEX_ECHO_SET_SAMPLING_RATE, &rate)
        speex_preprocess_ctl(self.pre, SPEEX_PREPROCESS_SET_ECHO_STATE, self.echo)
        # the residual echo suppressor only runs inside the denoiser: keep it on, and let
        # noise_suppression choose how far the noise floor goes down (0 dB = left alone)
        speex_preprocess_ctl(self.pre, SPEEX_PREPROCESS_SET_DENOISE, &on)
        ns_db = -25 if noise_suppression else 0
        speex_preprocess_ctl(self.pre, SPEEX_PREPROCESS_SET_NOISE_SUPPRESS, &ns_db)
        speex_preprocess_ctl(self.pre, SPEEX_PREPROCESS_SET_AGC, &on if agc else &off)
        if agc:
            speex_preprocess_ctl(self.pre, SPEEX_PREPROCESS_SET_AGC_LEVEL, &level)

    def __dealloc__(self):
        if self.pre != NULL:
            speex_preprocess_state_destroy(self.pre)
        if self.echo != NULL:
            speex_echo_state_destroy(self.echo)

    cdef void process_c(self, int16_t *mic, const int16_t *ref) noexcept nogil:
        speex_echo_cancellation(self.echo, mic, ref, self.out)
        speex_preprocess_run(self.pre, self.out)
        memcpy(mic, self.out, self.block * sizeof(int16_t))

    @property
    def name(self) -> str:
        return "speex"


cdef class WebRtcCanceller(EchoCanceller):
    """The WebRTC audio processing module (AEC with its own delay estimate in 0.3, AEC3 in
    1.x), high-pass filter, optional noise suppression and digital AGC."""

    cdef wap_state *st

    def __init__(self, int tail_ms=128, bint noise_suppression=False, bint agc=False,
                 int device_delay=0):
        super().__init__(tail_ms, device_delay)
        cdef char err[200]
        err[0] = 0
        self.st = wap_new(RATE, noise_suppression, agc, err, sizeof(err))
        if self.st == NULL:
            raise AecError(f"webrtc echo canceller unavailable: {err.decode(errors='replace')}")

    def __dealloc__(self):
        if self.st != NULL:
            wap_free(self.st)

    cdef void process_c(self, int16_t *mic, const int16_t *ref) noexcept nogil:
        if wap_render(self.st, ref) != 0:
            self.errors += 1
        # the delay line already took out what the FIFOs and the card add: hint the rest
        if wap_capture(self.st, mic, self.margin // (RATE // 1000)) != 0:
            self.errors += 1

    @property
    def name(self) -> str:
        return "webrtc"


def webrtc_version() -> str:
    """"0.3" or "1.x" when built with the WebRTC module, "" without it."""
    return wap_version().decode()


def unavailable(kind: str) -> str | None:
    """Why ``kind`` cannot be used in this build, or None when it can."""
    if kind not in KINDS:
        return f"unknown echo canceller {kind!r} (one of {', '.join(KINDS)})"
    if kind == "webrtc" and not webrtc_version():
        return ("the firmware was built without the WebRTC audio processing library "
                "(install libwebrtc-audio-processing-dev, on trixie "
                "libwebrtc-audio-processing-1-dev, and rebuild)")
    return None


def create(str kind, int tail_ms=128, bint noise_suppression=False, bint agc=False,
           int device_delay=0, int frame_samples=160):
    """The canceller called ``kind`` (off: None) for a call whose frames are ``frame_samples``
    long. Raises AecError with a one-line cause."""
    why = unavailable(kind)
    if why is not None:
        raise AecError(why)
    if kind == "off":
        return None
    if kind == "speex":
        return SpeexCanceller(tail_ms, noise_suppression, agc, device_delay, frame_samples)
    return WebRtcCanceller(tail_ms, noise_suppression, agc, device_delay)
