"""Runs one call's audio: the RTP/RTCP socket pair, the Cython loop thread and the audio pump.

Owns socket allocation (an even RTP port and RTCP on the next one), turning negotiated media
parameters into a running ``_rtpcore.MediaStream`` (with an SRTP transform when SDES keys were
agreed, re-keyed when a re-INVITE brings new ones), which path each side's audio takes (both
sides sound cards: the loop drives the card itself through ``firmware.core._card``, clocked by
its capture periods, and this module opens it, watches it through ``card_fd`` and reopens it by
its names while it is gone, off the loop thread; one side a card: that card's own thread on the
FIFO; a source that is one stretch of PCM repeated, such as a tone, and
a sink that keeps nothing handed to the loop itself, so a tone into a null sink runs on the loop
thread alone; anything else moved between the FIFOs and the source/sink by a plain Python pump
thread, so the real-time loop never needs the GIL), who keeps the packets' send times (the
kernel where the way out to the peer is fq, as ``firmware.media.pacing`` finds it and
``StreamSettings.kernel_pacing`` allows; else the loop), the eventfd the loop writes to when a DTMF
key arrives (``digit_fd``: the application watches it instead of polling), and stopping
everything cleanly. The peer's address is judged by ``firmware.address`` (as SIP and SDP judge
it) and never looked up as a name: one it refuses leaves the stream without a peer, which
sends and accepts nothing. Knows nothing about SIP messages: it takes MediaParams.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
from typing import Any

from .._rtpcore import MediaStream
from ..address import ipv4
from ..core._aec import AecError, EchoCanceller
from ..core._aec import create as create_canceller
from ..core._card import Card, CardError
from ..core._processor import CaptureProcessor
from ..core._srtp import SrtpTransform
from ..events import MediaParams, SrtpParams
from .audio import AudioError, Sink, Source, cycle_of, discards
from .pacing import egress
from .settings import StreamSettings

log = logging.getLogger("intercom.media")
DIRECTIONS = {"sendrecv": (True, True), "sendonly": (True, False),
              "recvonly": (False, True), "inactive": (False, False)}


class RtpPorts:
    """A bound RTP socket on an even port and its RTCP socket on the next port."""

    def __init__(self, address: str, port: int = 0, tries: int = 50) -> None:
        self.address = address
        last: OSError | None = None
        for _ in range(tries):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                want = port or random.randrange(20000, 60000, 2)
                rtp.bind((address, want))
                rtcp.bind((address, want + 1))
            except OSError as exc:
                rtp.close()
                rtcp.close()
                last = exc
                if port:
                    break
                continue
            for s in (rtp, rtcp):
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
            self.rtp, self.rtcp, self.port = rtp, rtcp, want
            return
        raise OSError(f"cannot bind RTP/RTCP ports on {address}"
                      f"{f':{port}' if port else ''}: {last}")

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


class RtpSession:
    """One running media stream. ``start`` once, ``update`` on re-INVITE, ``stop`` at the end."""

    def __init__(self, ports: RtpPorts, source: Source, sink: Sink,
                 settings: StreamSettings | None = None, cname: str = "intercom") -> None:
        self.ports = ports
        self.source = source
        self.sink = sink
        self.settings = settings or StreamSettings()
        self.cname = cname
        self.stream: MediaStream | None = None
        self._loop_thread: threading.Thread | None = None
        self._pump_thread: threading.Thread | None = None
        self._running = _held_lock()  # released when the session stops: wakes the pump at once
        self.final_stats: dict | None = None
        self.pacing: dict[str, Any] = {}
        self._pump_source = self._pump_sink = True
        self._cycled = False  # the loop takes the source's cycle itself
        self.srtp: SrtpParams | None = None
        self.transform: SrtpTransform | None = None
        # readable when an RFC 4733 key arrived: the loop thread writes to it without the GIL
        self._digit_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # both sides a sound card: the loop drives it (the names it opens), and writes to this
        # eventfd when the card goes or comes back
        cap, play = getattr(source, "card_pcm", None), getattr(sink, "card_pcm", None)
        self.card_names: tuple[str, str] | None = (cap, play) if cap and play else None
        self._card_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) \
            if self.card_names else -1
        self._reopening: threading.Thread | None = None
        self._handed = False  # a reopened card went to the loop since reopen_card last looked
        self.card_error: str | None = None  # why the card went, or the last reopen failed

    @property
    def digit_fd(self) -> int:
        """Watch this (asyncio add_reader); then call received_digits()."""
        return self._digit_fd

    @property
    def card_fd(self) -> int:
        """Readable when the card loop's card went or came back (-1: not a card session);
        then call card_state()."""
        return self._card_fd

    def card_state(self) -> str:
        """"ok" or "gone" while a card session runs; "none" otherwise. Clears card_fd."""
        if self._card_fd >= 0:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._card_fd)
        return self.stream.card_state if self.stream is not None else "none"

    def reopen_card(self) -> bool:
        """While the card is gone: try to open it again by its names (``plughw:CARD=<id>``
        finds a USB card wherever it comes back), off the loop thread, and hand it to the
        loop, which adopts it at its next tick. Call every second or two; True when a card
        was handed over. The open runs on a short-lived thread (a device that hangs on open
        never stalls the caller); the card the loop gave up is closed here."""
        stream = self.stream
        if stream is None or self.card_names is None:
            return False
        retired = stream.retired_card()
        if retired is not None:
            retired.close()
        if stream.card_state != "gone":
            self._handed = False  # adopted (or never gone)
            return False
        if self._reopening is not None and self._reopening.is_alive():
            return False
        if self._handed:  # the loop takes it at its next tick
            self._handed = False
            return True
        # nothing offered, nothing being opened: the card the loop holds is the one that
        # went, and the loop no longer touches it. Released before the same device is opened
        # again (the jack plugin crashes closing a client of a server that died once a new
        # one is up)
        gone = stream.the_card
        if gone is not None and not gone.closed:
            gone.close()
        self._reopening = threading.Thread(target=self._reopen, args=(stream,),
                                           name="card-reopen", daemon=True)
        self._reopening.start()
        return False

    def _reopen(self, stream: MediaStream) -> None:
        assert self.card_names is not None
        try:
            card = open_card(*self.card_names)
        except AudioError as exc:
            self.card_error = str(exc)
            log.debug("card still gone: %s", exc)
            return
        if self.stream is not stream:  # the session stopped meanwhile
            card.close()
            return
        stream.offer_card(card)
        self._handed = True
        log.info("sound card %s is back: handed to the media loop", self.card_names[0])

    @property
    def running(self) -> bool:
        return self._loop_thread is not None and self._loop_thread.is_alive()

    def start(self, media: MediaParams) -> None:
        if self.stream is not None:
            raise RuntimeError("media session already started")
        s = self.settings
        rng = random.SystemRandom()
        self.srtp = media.srtp
        self.transform = None if media.srtp is None else SrtpTransform(
            media.srtp.suite, media.srtp.local_key, media.srtp.remote_key)
        card = open_card(*self.card_names) if self.card_names else None  # AudioError
        self.stream = MediaStream(
            self.ports.rtp.fileno(), self.ports.rtcp.fileno(), media.payload_type, media.ptime,
            media.dtmf_payload_type or 101, rng.getrandbits(32), rng.getrandbits(16),
            rng.getrandbits(32), s.latch, s.jitter_target_ms, s.jitter_min_ms, s.jitter_max_ms,
            self.cname, self.transform,
            processor=self._canceller(media.ptime * 8, card is not None),
            notify_fd=self._digit_fd)
        self.stream.spin_us = s.spin_us
        self.pacing = self._choose_pacing(media)
        self.stream.tx_gain_q12 = _q12(s.capture_gain_db)
        self.stream.rx_gain_q12 = _q12(s.playback_gain_db)
        if card is not None:
            # both sides a card: the loop drives it, clocked by its capture periods; no FIFO,
            # no thread, no pump
            self.stream.use_card(card, self._card_fd)
            self._cycled = False
            self._pump_source = self._pump_sink = False
        else:
            self._wire_fifos()
        self._apply(media)
        self._pump_once()  # the first frames are ready before the first tick
        self._loop_thread = threading.Thread(target=self.stream.run,
                                             args=(s.realtime_priority,),
                                             name="rtp-loop", daemon=True)
        self._loop_thread.start()
        # nothing to move in Python (ALSA, tone, null): no pump thread waking every 40 ms
        self._pump_thread = None
        if self._pump_source or self._pump_sink:
            self._pump_thread = threading.Thread(target=self._pump, name="audio-pump",
                                                 daemon=True)
            self._pump_thread.start()
        log.info("media: %s/%d ms to %s:%d (%s, %s)", media.codec, media.ptime,
                 media.remote_addr, media.remote_port, media.direction,
                 f"SRTP {media.srtp.suite}" if media.srtp else "plain RTP")

    def _choose_pacing(self, media: MediaParams) -> dict[str, Any]:
        """Who keeps the packets' send times: the kernel where the way out to the peer holds
        a stamped packet to its time (``firmware.media.pacing``), else the loop (a second
        wake-up a period once the work costs). Decided once, as the call's media starts."""
        assert self.stream is not None
        addr = ipv4(media.remote_addr)
        way = egress(addr) if addr is not None and addr != "0.0.0.0" else None
        kernel = (self.settings.kernel_pacing and way is not None and way.kernel_paces
                  and self.stream.use_kernel_pacing())
        out: dict[str, Any] = {"pacing": "kernel" if kernel else "loop"}
        if way is not None:
            out["egress"] = f"{way.device} ({way.qdisc})"
        return out

    def _wire_fifos(self) -> None:
        """Which path each side takes when the loop does not drive a card itself."""
        assert self.stream is not None
        # devices with their own thread (ALSA) feed/drain the FIFOs directly
        card_source = hasattr(self.source, "attach")
        card_sink = hasattr(self.sink, "attach")
        if card_source:
            self.source.attach(self.stream.source)  # type: ignore[attr-defined]
        if card_sink:
            self.sink.attach(self.stream.sink)  # type: ignore[attr-defined]
        # a tone (or silence) and a null sink need no Python during the call: the loop cycles
        # the source's PCM and drops what it would play
        cycle = None if card_source else cycle_of(self.source)
        self._cycled = cycle is not None
        if cycle is not None:
            self.stream.set_capture_cycle(cycle)
        self.stream.discard_playback = not card_sink and discards(self.sink)
        self._pump_source = not card_source and not self._cycled
        self._pump_sink = not card_sink and not self.stream.discard_playback
        # a sound card's crystal is not the network's: match rates where a card is the far side
        self.stream.enable_drift_control(card_sink, card_source)

    def _canceller(self, frame_samples: int, card_loop: bool = False) -> CaptureProcessor | None:
        """The echo canceller for this call, its reference lined up with the card's buffers
        (in the card loop the loop tells it the card's own queues every period)."""
        s = self.settings
        card = 0 if card_loop else (getattr(self.source, "latency_samples", 0)
                                    + getattr(self.sink, "latency_samples", 0))
        try:
            return create_canceller(s.echo_canceller, s.echo_tail_ms, s.noise_suppression,
                                    s.agc, card, frame_samples)
        except AecError as exc:  # checked at start-up; a call without one beats no call
            log.error("echo canceller %s unavailable, call runs without: %s",
                      s.echo_canceller, exc)
            return None

    def canceller_stats(self) -> dict[str, Any]:
        """The echo canceller's figures for status (empty when there is none)."""
        proc = self.stream.processor if self.stream is not None else None
        if not isinstance(proc, EchoCanceller):
            return {}
        return {"kind": proc.name, "frames": proc.frames, "delay_ms": proc.delay / 8,
                "card_ms": proc.device_delay / 8,
                "delay_changes": proc.delay_changes, "errors": proc.errors}

    def update(self, media: MediaParams) -> None:
        """Re-INVITE: new remote address, direction (hold) or both."""
        if self.stream is None:
            self.start(media)
            return
        if (media.srtp is None) != (self.srtp is None):
            # SRTP switched on or off: a new stream (new SSRC) rather than a mixed one
            log.info("media protection changes to %s: restarting the stream",
                     f"SRTP {media.srtp.suite}" if media.srtp else "plain RTP")
            self._halt()
            self.start(media)
            return
        if media.srtp is not None and media.srtp != self.srtp:
            self._rekey(media.srtp)
        self._apply(media)
        log.info("media moved to %s:%d (%s)", media.remote_addr, media.remote_port,
                 media.direction)

    def _rekey(self, new: SrtpParams) -> None:
        """New keys from a re-INVITE: replace only the side whose key (or suite) changed."""
        assert self.transform is not None and self.srtp is not None
        if new.suite != self.srtp.suite or new.local_key != self.srtp.local_key:
            self.transform.set_outbound(new.suite, new.local_key)
        if new.suite != self.srtp.suite or new.remote_key != self.srtp.remote_key:
            self.transform.set_inbound(new.suite, new.remote_key)
        self.srtp = new
        log.info("SRTP re-keyed (%s)", new.suite)

    def _apply(self, media: MediaParams) -> None:
        """The peer's address and the direction. An address the one parser
        (``firmware.address``) refuses leaves the stream with no peer, which sends nothing
        and accepts nothing: never a name looked up, never "any source will do"."""
        assert self.stream is not None
        addr = ipv4(media.remote_addr)
        if addr is None or not 0 < media.remote_port <= 65535:
            log.warning("no RTP peer: %r port %d is not an IPv4 address and port "
                        "(nothing is sent or accepted)", media.remote_addr[:64],
                        media.remote_port)
            self.stream.clear_remote()
        else:
            self.stream.set_remote(addr, media.remote_port)
        send, receive = DIRECTIONS.get(media.direction, (False, False))
        self.stream.set_direction(send, receive)

    def send_dtmf(self, digits: str) -> int:
        return self.stream.send_dtmf(digits) if self.stream else 0

    def received_digits(self) -> str:
        """Keys received since the last call; clears the wake-up fd first, so a key that
        arrives while this runs wakes the reader again."""
        if self._digit_fd >= 0:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._digit_fd)
        return self.stream.received_digits() if self.stream else ""

    def stats(self) -> dict:
        if self.stream is None:
            return self.final_stats or {}
        return {**self.stream.stats(), **self.pacing}

    def _pump_once(self) -> None:
        assert self.stream is not None
        if self._pump_source:
            want = self.settings.prefill_ms - len(self.stream.source) // 8
            if want > 0:
                pcm = self.source.read(want * 8)
                if pcm:
                    self.stream.source.write(pcm)
        if self._pump_sink:
            received = self.stream.sink.read()
            if received:
                self.sink.write(received)

    def _pump(self) -> None:
        while not self._stopped_within(0.04):  # every other packet period: few wake-ups
            try:
                self._pump_once()
            except Exception:  # a broken source/sink must not take the call down silently
                log.exception("audio pump failed; continuing with silence")
                self._stopped_within(0.2)

    def _stopped_within(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True once the session is stopping (at once when it does).
        A bare lock's timed acquire: a threading.Event's wait goes through a Condition (a new
        lock and its bookkeeping in Python on every call)."""
        if self._running.acquire(timeout=seconds):
            self._running.release()  # stays stopped for every later caller
            return True
        return False

    def _halt(self) -> None:
        """Stop the loop and the pump; keep the ports, source and sink."""
        assert self.stream is not None
        self._running.release()
        self.stream.stop()
        for t in (self._loop_thread, self._pump_thread):
            if t is not None:
                t.join(2.0)
        if self._cycled:  # the source moves on by what the loop took (its phase carries on)
            self.source.read(self.stream.cycle_position)
        self._pump_once_final()
        self.final_stats = {**self.stream.stats(), **self.pacing}
        if self.stream.the_card is not None:  # the loop has ended: its cards are ours to close
            for card in (self.stream.the_card, self.stream.retired_card()):
                if card is not None:
                    card.close()
        self.stream = None
        self.transform = None
        self._running = _held_lock()

    def stop(self) -> None:
        if self.stream is not None:
            self._halt()
            assert self.final_stats is not None
            log.info("media stopped: %s", {k: self.final_stats[k] for k in (
                "sent", "received", "lost", "late", "concealed_ms", "jitter_ms")})
        if self._digit_fd >= 0:  # only now: the loop thread that writes to it has ended
            os.close(self._digit_fd)
            self._digit_fd = -1
        if self._card_fd >= 0:
            os.close(self._card_fd)
            self._card_fd = -1

    def _pump_once_final(self) -> None:
        assert self.stream is not None
        if self._pump_sink:
            received = self.stream.sink.read()
            if received:
                self.sink.write(received)


def open_card(capture: str, playback: str) -> Card:
    """The sound card the loop drives, by its ALSA names; AudioError naming the device and
    alsa-lib's reason when it cannot be opened."""
    try:
        return Card(capture, playback)
    except CardError as exc:
        raise AudioError(str(exc)) from None


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


def _q12(db: float) -> int:
    """A gain in dB as a Q12 fixed-point factor (4096 = unity)."""
    return max(0, min(int(round(4096 * 10 ** (db / 20))), 32767 * 8))
