# cython: language_level=3
"""The packet-transform hook between the RTP/RTCP core and its sockets (declarations)."""

cdef enum:
    # bytes a transform may append to a packet (SRTP: auth tag, SRTCP index; no MKI)
    TRANSFORM_TRAILER_MAX = 32
    # negative results of the four hooks
    XF_AUTH = -1      # authentication failed (forged, tampered or wrong key)
    XF_REPLAY = -2    # replayed or too old for the replay window
    XF_ERROR = -3     # anything else (too short, no room, library error)


cdef class PacketTransform:
    cdef int protect_rtp_c(self, unsigned char *pkt, int n, int cap) noexcept nogil
    cdef int unprotect_rtp_c(self, unsigned char *pkt, int n) noexcept nogil
    cdef int protect_rtcp_c(self, unsigned char *pkt, int n, int cap) noexcept nogil
    cdef int unprotect_rtcp_c(self, unsigned char *pkt, int n) noexcept nogil
    cdef bytes _run(self, object packet, int which)
