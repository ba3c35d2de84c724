# cython: language_level=3
"""A sound card's capture and playback PCMs through alsa-lib (declarations)."""

from libc.stdint cimport int16_t, uint64_t

cdef extern from "<alsa/asoundlib.h>" nogil:
    ctypedef struct snd_pcm_t:
        pass
    ctypedef long snd_pcm_sframes_t
    ctypedef unsigned long snd_pcm_uframes_t

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents

cdef enum:
    CARD_MAX_FDS = 8
    CARD_PERIOD = 160        # capture period: 20 ms at 8 kHz
    CARD_PLAY_PERIOD = 80    # playback period: 10 ms
    CARD_PLAY_PERIODS = 4    # playback buffer: 40 ms of room
    CARD_CAPTURE_PERIODS = 4
    CARD_PREFILL = 120       # silence ahead of the first frame played (15 ms)

# wait_c results
cdef enum:
    CARD_READY = 1
    CARD_TIMEOUT = 0
    CARD_GONE = -1


cdef class Card:
    cdef snd_pcm_t *cap
    cdef snd_pcm_t *play
    cdef pollfd fds[CARD_MAX_FDS]
    cdef int nfds
    cdef readonly str capture_name, playback_name
    cdef readonly int period, play_period, play_buffer, cap_buffer, prefill
    cdef readonly bint gone, started, play_running
    cdef readonly int error  # the errno that made it gone (0: none, or no period in time)
    cdef readonly uint64_t capture_xruns, playback_xruns, frames_read, frames_written
    cdef readonly uint64_t playback_dropped  # samples the playback buffer had no room for

    cdef int start_c(self) noexcept nogil
    cdef int wait_c(self, int timeout_ms) noexcept nogil
    cdef int read_c(self, int16_t *buf, int n) noexcept nogil
    cdef int write_c(self, const int16_t *buf, int n) noexcept nogil
    cdef long play_delay_c(self) noexcept nogil
    cdef long capture_avail_c(self) noexcept nogil
    cdef void mark_gone_c(self, int err) noexcept nogil
    cdef int _prefill_c(self) noexcept nogil
    cdef int _recover_c(self, snd_pcm_t *pcm, int err, bint capture) noexcept nogil
    cdef void _release(self) noexcept
