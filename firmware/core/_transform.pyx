# cython: language_level=3, boundscheck=False, wraparound=False
"""The packet-transform hook: what sits between the RTP/RTCP core and the socket.

Owns the interface only: four ``nogil`` hooks (protect/unprotect, RTP/RTCP) that rewrite a
packet in place, returning its new length or a negative reason (XF_AUTH, XF_REPLAY, XF_ERROR),
and a Python face that runs the same hooks packet by packet for tests. The base class is the
identity transform. The media core calls the hooks without the GIL; a stream without a
transform never calls them. Knows nothing about RTP fields, sockets or any cipher: SRTP
(``firmware.core._srtp``) is one subclass.
"""

from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

REASONS = {XF_AUTH: "auth", XF_REPLAY: "replay", XF_ERROR: "error"}
TRAILER_MAX = TRANSFORM_TRAILER_MAX


class TransformError(ValueError):
    """A packet the transform refused; ``reason`` is ``auth``, ``replay`` or ``error``."""

    def __init__(self, reason: str, what: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.reason = reason


cdef class PacketTransform:
    """The identity transform; subclasses override the four ``cdef`` hooks."""

    cdef int protect_rtp_c(self, unsigned char *pkt, int n, int cap) noexcept nogil:
        return n

    cdef int unprotect_rtp_c(self, unsigned char *pkt, int n) noexcept nogil:
        return n

    cdef int protect_rtcp_c(self, unsigned char *pkt, int n, int cap) noexcept nogil:
        return n

    cdef int unprotect_rtcp_c(self, unsigned char *pkt, int n) noexcept nogil:
        return n

    cdef bytes _run(self, object packet, int which):
        cdef const unsigned char[::1] mv = packet
        cdef int n = mv.shape[0]
        cdef int cap = n + TRANSFORM_TRAILER_MAX
        cdef bytes buf = PyBytes_FromStringAndSize(NULL, cap)
        cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(buf)
        cdef int rc
        if n:
            memcpy(p, &mv[0], n)
        with nogil:
            if which == 0:
                rc = self.protect_rtp_c(p, n, cap)
            elif which == 1:
                rc = self.unprotect_rtp_c(p, n)
            elif which == 2:
                rc = self.protect_rtcp_c(p, n, cap)
            else:
                rc = self.unprotect_rtcp_c(p, n)
        if rc < 0:
            raise TransformError(REASONS.get(rc, "error"),
                                 ("protect RTP", "unprotect RTP", "protect RTCP",
                                  "unprotect RTCP")[which])
        return buf[:rc]

    def protect_rtp(self, packet) -> bytes:
        """One outgoing RTP packet as it would leave the socket."""
        return self._run(packet, 0)

    def unprotect_rtp(self, packet) -> bytes:
        """One received packet as the RTP core would see it; TransformError if refused."""
        return self._run(packet, 1)

    def protect_rtcp(self, packet) -> bytes:
        return self._run(packet, 2)

    def unprotect_rtcp(self, packet) -> bytes:
        return self._run(packet, 3)
