# cython: language_level=3
"""RFC 4733 telephone events both ways (declarations)."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass

cdef enum:
    MAX_DIGITS = 64

cdef struct EventPacket:
    uint8_t code
    bint end
    bint marker
    uint32_t duration  # timestamp units since the event's start
    uint32_t ts        # the event's start timestamp (every packet of an event carries it)


cdef class DtmfSender:
    cdef uint8_t queue[MAX_DIGITS]
    cdef int head, count
    cdef pthread_mutex_t lock
    cdef int code, frames, sent, gap
    cdef uint32_t start_ts
    cdef public int duration_ms
    cdef public uint64_t events_sent

    cdef int step_c(self, uint32_t ts, int frame_samples, int ptime_ms, bint send,
                    EventPacket *out) noexcept nogil


cdef class DtmfReceiver:
    cdef uint8_t digits[MAX_DIGITS]
    cdef int count
    cdef pthread_mutex_t lock
    cdef uint32_t last_ts
    cdef bint have_event
    cdef public uint64_t events_received
    cdef public int notify_fd  # written (8 bytes, an eventfd's count) when a digit is queued

    cdef int receive_c(self, const uint8_t *payload, int n, uint32_t ts) noexcept nogil
