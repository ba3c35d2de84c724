# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""RFC 4733 telephone events both ways: the digits queued to send and the digits received.

Owns the event state machines. Sending: digits queued from Python (thread-safe) start one at a
time at the stream's current timestamp, one packet per period until the duration is reached,
the end packet three times, then a two-period gap of audio. Receiving: one digit per event
timestamp whatever the marker or end bits say, kept in one mutex-guarded queue (the one place a
"digit arrived" notification would go). Knows nothing about RTP headers, sockets or clocks.
"""

from posix.unistd cimport write
from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from "<pthread.h>" nogil:
    int pthread_mutex_init(pthread_mutex_t *, void *)
    int pthread_mutex_destroy(pthread_mutex_t *)
    int pthread_mutex_lock(pthread_mutex_t *)
    int pthread_mutex_unlock(pthread_mutex_t *)

DTMF_EVENTS = "0123456789*#ABCD"


cdef class DtmfSender:
    """Queued digits out, one event at a time, interleaved with audio by ``step_c``."""

    def __cinit__(self):
        pthread_mutex_init(&self.lock, NULL)
        self.code = -1
        self.duration_ms = 100

    def __dealloc__(self):
        pthread_mutex_destroy(&self.lock)

    def queue_digits(self, str digits) -> int:
        """Queue events; returns how many were queued (unknown characters skipped)."""
        cdef int queued = 0
        pthread_mutex_lock(&self.lock)
        for ch in digits.upper():
            idx = DTMF_EVENTS.find(ch)
            if idx >= 0 and self.count < MAX_DIGITS:
                self.queue[(self.head + self.count) % MAX_DIGITS] = idx
                self.count += 1
                queued += 1
        pthread_mutex_unlock(&self.lock)
        return queued

    cdef int step_c(self, uint32_t ts, int frame_samples, int ptime_ms, bint send,
                    EventPacket *out) noexcept nogil:
        """One packet period at timestamp ``ts``: how many copies of ``out`` to send.

        0 means this period carries audio (or nothing, when not sending); an event that
        starts while the stream does not send is dropped.
        """
        cdef int copies
        if self.code < 0 and self.gap == 0:
            pthread_mutex_lock(&self.lock)
            if self.count > 0:
                self.code = self.queue[self.head]
                self.head = (self.head + 1) % MAX_DIGITS
                self.count -= 1
                self.start_ts = ts
                self.frames = (self.duration_ms + ptime_ms - 1) // ptime_ms
                self.sent = 0
            pthread_mutex_unlock(&self.lock)
        if self.code >= 0:
            if not send:
                self.code = -1
                return 0
            self.sent += 1
            out.code = <uint8_t>self.code
            out.end = self.sent >= self.frames
            out.marker = self.sent == 1
            out.duration = <uint32_t>(self.sent * frame_samples)
            out.ts = self.start_ts
            copies = 1
            if out.end:
                copies = 3
                self.events_sent += 1
                self.code = -1
                self.gap = 2
            return copies
        if self.gap > 0:
            self.gap -= 1  # a short pause of audio between digits
        return 0

    @property
    def pending(self) -> int:
        return self.count + (1 if self.code >= 0 else 0)


cdef class DtmfReceiver:
    """Digits in: de-duplicated by event timestamp, queued until Python takes them."""

    def __cinit__(self):
        pthread_mutex_init(&self.lock, NULL)
        self.notify_fd = -1

    def __dealloc__(self):
        pthread_mutex_destroy(&self.lock)

    cdef int receive_c(self, const uint8_t *payload, int n, uint32_t ts) noexcept nogil:
        """1 a new digit (queued), 0 a repeat of the current event, -1 malformed."""
        cdef uint64_t wake = 1
        if n < 4 or payload[0] > 15:
            return -1
        if self.have_event and ts == self.last_ts:
            return 0
        self.have_event = True
        self.last_ts = ts
        self.events_received += 1
        pthread_mutex_lock(&self.lock)
        if self.count < MAX_DIGITS:  # the one place a digit is queued
            self.digits[self.count] = payload[0]
            self.count += 1
        pthread_mutex_unlock(&self.lock)
        if self.notify_fd >= 0:  # wake whoever waits for digits (App: asyncio add_reader)
            write(self.notify_fd, &wake, 8)
        return 1

    def receive(self, payload, unsigned int ts) -> int:
        cdef const uint8_t[::1] mv = payload
        if mv.shape[0] == 0:
            return -1
        return self.receive_c(&mv[0], mv.shape[0], ts)

    def take(self) -> str:
        """Digits received since the last call."""
        pthread_mutex_lock(&self.lock)
        out = "".join(DTMF_EVENTS[self.digits[i]] for i in range(self.count))
        self.count = 0
        pthread_mutex_unlock(&self.lock)
        return out
