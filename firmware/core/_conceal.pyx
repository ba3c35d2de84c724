# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Packet-loss concealment: what is played for a frame that did not arrive.

Owns the one place concealment happens. The media core calls ``good_c`` on every decoded frame
(the concealer may keep history, or smooth the frame in place) and ``conceal_c`` for every
missing frame once a good frame has been seen (fill ``pcm``). This one repeats the last good
frame, fading it out over five frames, then plays silence; a G.711 Appendix I concealer is a
drop-in with the same methods. ``conceal_towards_c`` is called instead of ``conceal_c`` when the
frame after the gap is already known (this one ignores it). Knows nothing about RTP, the jitter
buffer or clocks.
"""

from libc.stdint cimport int16_t
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

cdef int FADE_FRAMES = 5


cdef class Concealer:
    """Repeat-and-fade."""

    cdef void good_c(self, int16_t *pcm, int n) noexcept nogil:
        if n > CONCEAL_MAX:
            n = CONCEAL_MAX
        memcpy(self.last, pcm, n * sizeof(int16_t))
        self.have_last = True
        self.run = 0

    cdef void conceal_c(self, int16_t *pcm, int n) noexcept nogil:
        cdef int i
        if n > CONCEAL_MAX:
            memset(pcm + CONCEAL_MAX, 0, (n - CONCEAL_MAX) * sizeof(int16_t))
            n = CONCEAL_MAX
        if not self.have_last or self.run >= FADE_FRAMES:
            memset(pcm, 0, n * sizeof(int16_t))
            return
        self.run += 1
        for i in range(n):
            pcm[i] = <int16_t>(self.last[i] * (FADE_FRAMES - self.run) // FADE_FRAMES)

    cdef void conceal_towards_c(self, int16_t *pcm, int n, const int16_t *future,
                                int gap) noexcept nogil:
        """Fill a missing frame when the frame ``gap`` frames on (1: the very next one) is
        already here, ``future`` (``n`` samples). Repeat-and-fade does not look ahead."""
        self.conceal_c(pcm, n)

    # ------------------------------------------------------------------ Python face (tests)
    def good(self, pcm) -> bytes:
        """One decoded frame (little-endian 16-bit PCM bytes) as it will be played."""
        cdef const unsigned char[::1] mv = pcm
        cdef int n = mv.shape[0] // 2
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n * 2)
        if n:
            memcpy(PyBytes_AS_STRING(out), &mv[0], n * 2)
            self.good_c(<int16_t *>PyBytes_AS_STRING(out), n)
        return out

    def conceal_towards(self, future, int gap=1) -> bytes:
        """What is played for one missing frame when ``future`` (16-bit PCM, the frame ``gap``
        frames on) is already known."""
        cdef const unsigned char[::1] mv = future
        cdef int n = mv.shape[0] // 2
        if n <= 0 or n > 4800 or mv.shape[0] % 2 or gap < 1:
            raise ValueError("future is 1..4800 16-bit samples, gap at least 1")
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n * 2)
        self.conceal_towards_c(<int16_t *>PyBytes_AS_STRING(out), n, <const int16_t *>&mv[0],
                               gap)
        return out

    def conceal(self, int samples) -> bytes:
        """What is played for one missing frame of ``samples`` samples."""
        cdef bytes out = PyBytes_FromStringAndSize(NULL, samples * 2)
        if samples > 0:
            self.conceal_c(<int16_t *>PyBytes_AS_STRING(out), samples)
        return out
