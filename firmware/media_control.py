"""The call's media as the intercom drives it: the RTP port pair, the session a negotiated
MediaParams starts, moves and stops, the ring and ringback tones, the eventfd wake-ups for
RFC 4733 keys and for the call's sound card going or coming back (reopened every 1.5 s while it
is gone, the call staying up), the ALSA probe (now and every 10 s while a device is missing) and
the media timeout (a peer that vanished without a BYE).

Owns those parts' lifetime and what the status shows of them (among it the ALSA device each
side last opened, ``usb`` as the card it resolved to: the one in use now). Tells the intercom
what happened through the callbacks it is given (a supervisor event, a received key, a
timed-out call); must not know SIP, the supervisor's states or the control socket.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, cast

from . import supervisor as sv
from .config import Config
from .events import MediaParams
from .media.audio import AudioError, Sink, Source
from .media.settings import StreamSettings
from .parts import Audio, Clock, Handle, Media, MediaSession, Ports, TonePlayback
from .sip.sdp import LocalMedia

log = logging.getLogger("intercom")

PROBE_EVERY = 10  # seconds between two ALSA probes while a device is missing
REOPEN_EVERY = 1.5  # seconds between two tries to reopen a call's sound card that went


class MediaControl:
    """``report``: feeds the supervisor (AudioFailed, AudioRecovered); ``digit``: a received
    RFC 4733 key; ``in_call``: whether a call is up; ``timed_out``: hangs up a call whose
    media stopped, True when the call ended."""

    def __init__(self, cfg: Config, parts: Media, audio: Audio, clock: Callable[[], Clock], *,
                 report: Callable[[sv.Event], object], digit: Callable[[str], None],
                 in_call: Callable[[], bool], timed_out: Callable[[str], bool]) -> None:
        self.cfg = cfg
        self.parts = parts
        self.audio = audio
        self._clock = clock
        self._report, self._digit, self._in_call, self._timed_out = \
            report, digit, in_call, timed_out
        self.ip = "127.0.0.1"
        self.ports: Ports | None = None
        self.session: MediaSession | None = None
        self.tones: TonePlayback | None = None
        self.params: dict[str, Any] | None = None  # the negotiated media, as the status shows it
        self.last_stats: dict[str, Any] | None = None  # the last call's final RTP statistics
        self.audio_error: str | None = None
        # the ALSA name each side last opened or probed (``usb`` resolved at that open), None
        # before, after a failed open, or for a side that is not a device (tone, WAV, null)
        self.devices: dict[str, str | None] = {"capture": None, "playback": None}
        self._digit_fd = -1
        self._ticks = -1
        self._watch: Handle | None = None  # the media-timeout poll while media runs
        self._rx_mark: tuple[int, float] | None = None  # (RTP packets received, when seen)
        self._probe: Handle | None = None
        self._card_fd = -1
        self._card_gone = False  # the call's sound card went (the call goes on without it)
        self._reopen: Handle | None = None

    @property
    def clock(self) -> Clock:
        return self._clock()

    # --------------------------------------------------------------- lifetime
    def open(self, ip: str) -> None:
        """Bind the RTP port pair (OSError when media.rtp_port cannot be had)."""
        self.ip = ip
        self.ports = self.parts.ports(ip, self.cfg.media.rtp_port)

    def canceller_unavailable(self) -> str | None:
        return self.parts.canceller_unavailable(self.cfg.audio.echo_canceller)

    def close(self) -> int:
        """Stop everything; returns the keys that arrived too late to be judged."""
        late = self.stop()
        self.tone("off")
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        if self.ports is not None:
            self.ports.close()
        return late

    def local(self) -> LocalMedia:
        """What the next offer or answer announces (fresh SRTP keys every call)."""
        assert self.ports is not None
        m = self.cfg.media
        return LocalMedia(self.ip, self.ports.port, m.codecs, m.dtmf_payload_type, m.ptime,
                          srtp=m.srtp)

    # --------------------------------------------------------------- audio devices
    def check_audio(self) -> None:
        """Probe ALSA devices now and every 10 s while they are missing."""
        if self.session is not None and self._card_gone:
            return  # the card loop's own state: reopened by _reopen_card, not probed
        a = self.cfg.audio
        problems = []
        for spec, capture in ((a.capture, True), (a.playback, False)):
            if self.audio.is_device(spec) and self.session is None:
                try:
                    self._opened(capture, self.audio.probe(spec, capture))
                except AudioError as exc:
                    self._opened(capture, None)
                    problems.append(str(exc))
        if problems and self.audio_error != problems[0]:
            self.audio_error = problems[0]
            self._report(sv.AudioFailed(problems[0]))
        elif not problems and self.audio_error is not None:
            self.audio_error = None
            self._report(sv.AudioRecovered())
        if self._probe is not None:
            self._probe.cancel()  # probed early (a press): one probe timer, not a growing chain
            self._probe = None
        if problems:
            self._probe = self.clock.call_later(PROBE_EVERY, self.check_audio)

    def available(self) -> bool:
        if self.audio_error is not None:
            self.check_audio()
        return self.audio_error is None

    def tone(self, kind: str) -> None:
        if self.tones is not None:
            self.tones.stop()
            self.tones = None
        if kind in ("ring", "ringback"):
            try:
                sink = self.audio.open(self.cfg.audio.playback, capture=False)
            except AudioError as exc:
                log.warning("cannot play the %s tone: %s", kind, exc)
                self._opened(False, None)
                return
            self._opened(False, _device(sink))
            try:
                self.tones = self.audio.tone(cast(Sink, sink), kind)
            except AudioError as exc:
                log.warning("cannot play the %s tone: %s", kind, exc)
                sink.close()
                return
            self.tones.start()

    # --------------------------------------------------------------- the session
    def start(self, media: MediaParams) -> None:
        assert self.ports is not None
        self.tone("off")
        a, m = self.cfg.audio, self.cfg.media
        try:
            source = cast(Source, self.audio.open(a.capture, capture=True))
            try:
                sink = cast(Sink, self.audio.open(a.playback, capture=False))
            except AudioError:
                source.close()
                raise
        except AudioError as exc:
            log.error("audio unavailable: %s", exc)
            self.devices = {"capture": None, "playback": None}
            self.audio_error = str(exc)
            self._report(sv.AudioFailed(str(exc)))
            return
        settings = StreamSettings(m.jitter_target_ms, m.jitter_min_ms, m.jitter_max_ms,
                                  m.realtime_priority, m.latch, spin_us=m.spin_us,
                                  kernel_pacing=m.kernel_pacing,
                                  capture_gain_db=a.capture_gain_db,
                                  playback_gain_db=a.playback_gain_db,
                                  echo_canceller=a.echo_canceller, echo_tail_ms=a.echo_tail_ms,
                                  noise_suppression=a.noise_suppression, agc=a.agc)
        self.session = self.parts.session(
            self.ports, source, sink, settings, f"{self.cfg.sip.username}@{self.ip}")
        try:
            self.session.start(media)
        except AudioError as exc:  # the card the loop was to drive would not open
            log.error("audio unavailable: %s", exc)
            session, self.session = self.session, None
            session.stop()
            source.close()
            sink.close()
            self.devices = {"capture": None, "playback": None}
            self.audio_error = str(exc)
            self._report(sv.AudioFailed(str(exc)))
            return
        # the names the call opened: the card loop reopens a card that went by these, and the
        # next call or probe resolves ``usb`` afresh
        self.devices = {"capture": _device(source), "playback": _device(sink)}
        self._show(media)
        self._ticks = -1
        self._start_watch()
        # RFC 4733 keys wake the loop: the media thread writes to this fd when one arrives
        self._digit_fd = self.session.digit_fd
        if self._digit_fd >= 0:
            self.clock.add_reader(self._digit_fd, self._drain_digits)
        # the loop drives the sound card itself: it writes to this fd when the card goes or
        # comes back
        self._card_fd = self.session.card_fd
        self._card_gone = False
        if self._card_fd >= 0:
            self.clock.add_reader(self._card_fd, self._card_changed)

    def update(self, media: MediaParams, in_call: bool) -> None:
        """A re-INVITE (hold, resume, move): the running session follows; a call that had no
        media yet starts it."""
        self._show(media)
        self._rx_mark = None  # restarts the media-timeout clock
        if self.session is not None:
            self.session.update(media)
        elif in_call:
            self.start(media)

    def stop(self) -> int:
        """Stop the session; returns the keys that arrived too late to be judged."""
        late = 0
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._digit_fd >= 0:
            self.clock.remove_reader(self._digit_fd)
            self._digit_fd = -1
        if self._card_fd >= 0:
            self.clock.remove_reader(self._card_fd)
            self._card_fd = -1
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        card_gone, self._card_gone = self._card_gone, False
        if self.session is not None:
            session, self.session = self.session, None
            late = len(session.received_digits())
            session.stop()
            self.last_stats = session.final_stats
            session.source.close()
            session.sink.close()
        self.params = None
        if card_gone:  # still gone when the call ended: probed every PROBE_EVERY from now on
            self.check_audio()
        return late

    def ticking(self) -> bool:
        """During a call, whether the media loop ticked since the last look (True otherwise)."""
        if self.session is None:
            return True
        ticks = self.session.stats().get("ticks", 0)
        ok = self.session.running and ticks != self._ticks
        self._ticks = ticks
        return ok

    # --------------------------------------------------------------- the call's sound card
    def _card_changed(self) -> None:
        """The loop's card went (error LED, new calls 480, the call stays up: silence is
        sent) or a reopened one took over."""
        if self.session is None:
            return
        state = self.session.card_state()
        if state == "gone" and not self._card_gone:
            self._card_gone = True
            err = int(self.session.stats().get("card_error", 0))
            why = os.strerror(err) if err else "no capture period for 1 s"
            reason = f"sound card {self.cfg.audio.capture!r} is gone during the call ({why})"
            self.audio_error = reason
            self._report(sv.AudioLost(reason))
            self._reopen = self.clock.call_later(REOPEN_EVERY, self._reopen_card)
        elif state == "ok" and self._card_gone:
            self._card_gone = False
            self.audio_error = None
            if self._reopen is not None:
                self._reopen.cancel()
                self._reopen = None
            self._report(sv.AudioRecovered())

    def _reopen_card(self) -> None:
        self._reopen = None
        if self.session is None or not self._card_gone:
            return
        self.session.reopen_card()
        self._reopen = self.clock.call_later(REOPEN_EVERY, self._reopen_card)

    def _opened(self, capture: bool, name: str | None) -> None:
        self.devices["capture" if capture else "playback"] = name

    def _drain_digits(self) -> None:
        if self.session is not None:
            for digit in self.session.received_digits():
                self._digit(digit)

    def _show(self, media: MediaParams | None) -> None:
        self.params = None if media is None else {
            **{k: getattr(media, k) for k in ("remote_addr", "remote_port", "codec", "ptime",
                                             "direction", "dtmf_payload_type")},
            "srtp": media.srtp.suite if media.srtp else None}  # the suite, never a key

    # --------------------------------------------------------------- media timeout
    def _poll(self) -> float:
        """Seconds between two looks at the stream's counters (0: no timeout configured)."""
        m = self.cfg.media
        bounds = [b for b in (m.timeout, m.hold_timeout) if b > 0]
        return max(0.2, min(2.0, min(bounds) / 4)) if bounds else 0.0

    def _start_watch(self) -> None:
        """Start polling the stream's received-packet count: a peer that vanished without a
        BYE costs at most media.timeout (media.hold_timeout on hold). Polled from the event
        loop every few seconds, never from the 20 ms loop."""
        self._rx_mark = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if (poll := self._poll()) > 0:
            self._watch = self.clock.call_later(poll, self._check)

    def _check(self) -> None:
        self._watch = None
        if self.session is None:
            return
        now = self.clock.time()
        received = int(self.session.stats().get("received", 0))
        if self._rx_mark is None or received != self._rx_mark[0]:
            self._rx_mark = (received, now)  # only the negotiated peer's packets count
        held = (self.params or {}).get("direction", "sendrecv") != "sendrecv"
        key = "hold_timeout" if held else "timeout"
        bound = getattr(self.cfg.media, key)
        silent = now - self._rx_mark[1]
        if bound > 0 and silent >= bound and self._in_call():
            why = f"media timeout: no RTP for {silent:.0f} s{' on hold' if held else ''}"
            log.warning("%s (media.%s is %g s): hanging up", why, key, bound)
            if self._timed_out(why):
                return
        self._watch = self.clock.call_later(self._poll(), self._check)


def _device(side: Source | Sink) -> str | None:
    """The ALSA name a source or sink opens (``card_pcm``: ``usb`` resolved), None when it is
    not a device."""
    name = getattr(side, "card_pcm", None)
    return name if isinstance(name, str) else None
