# cython: language_level=3, boundscheck=False, wraparound=False
"""The capture-processor hook: what the media core calls on the PCM it plays and captures.

Owns the interface only: two ``nogil`` hooks the loop calls once per packet period.
``playback_c`` sees every frame the box is about to play (the far end's voice after gain: an
echo canceller's reference) with ``queued``, the samples already waiting in the playback FIFO
ahead of it; ``capture_c`` gets every captured frame before it is encoded, to clean in place,
with ``queued``, the samples captured after it and still waiting in the capture FIFO. Both
``queued`` figures let a processor follow the speaker-to-microphone delay the FIFOs add; the
sound card's own buffers it must know or estimate itself. The base class changes nothing.
A Python face runs the same hooks frame by frame for tests. Knows nothing about RTP, sockets,
ALSA or any particular algorithm: echo cancellers (``firmware.core._aec``) are subclasses.
"""

from libc.stdint cimport int16_t, uint8_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize


cdef class CaptureProcessor:
    """The identity processor; subclasses override the two ``cdef`` hooks."""

    cdef void playback_c(self, const int16_t *pcm, int n, int queued) noexcept nogil:
        pass

    cdef void capture_c(self, int16_t *pcm, int n, int queued) noexcept nogil:
        pass

    def playback(self, pcm, int queued=0) -> None:
        """Hand one played frame (little-endian 16-bit PCM bytes) to the processor."""
        cdef const uint8_t[::1] mv = pcm
        cdef int n = mv.shape[0] // 2
        if n == 0:
            return
        cdef bytes buf = PyBytes_FromStringAndSize(<const char *>&mv[0], n * 2)
        cdef const int16_t *p = <const int16_t *>PyBytes_AS_STRING(buf)
        with nogil:
            self.playback_c(p, n, queued)

    def capture(self, pcm, int queued=0) -> bytes:
        """One captured frame as the encoder would get it after processing."""
        cdef const uint8_t[::1] mv = pcm
        cdef int n = mv.shape[0] // 2
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n * 2)
        cdef int16_t *p = <int16_t *>PyBytes_AS_STRING(out)
        if n == 0:
            return out
        memcpy(p, &mv[0], n * 2)
        with nogil:
            self.capture_c(p, n, queued)
        return out
