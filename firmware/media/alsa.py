"""ALSA devices by name, and where only one side of the audio is a card (the mixed case: a
microphone with a WAV playback, or the reverse; ring tones outside a call): capture and
playback through pyalsaaudio, 8 kHz mono S16_LE via the ``plug`` layer, 20 ms capture periods
and 10 ms playback periods, one thread per direction feeding the media stream's FIFOs.

When both sides of a call are ALSA devices the media loop drives the card itself
(``firmware.core._card`` through alsa-lib, no thread here): this module then only names the
devices (``card_pcm``: ``usb`` resolved to the USB card by its id). It also owns listing and
probing devices (with a clear error when one is missing), and for its threads xrun recovery
that keeps the call going and pacing for ALSA plugins that are not (file/null). Knows nothing
about RTP or SIP: it moves PCM between a device and a FIFO.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from .audio import AudioError

log = logging.getLogger("intercom.alsa")
RATE, PERIOD = 8000, 160  # samples: 20 ms (capture)
PLAY_PERIOD = 80  # samples: 10 ms (playback)
# Periods in the device buffer. Capture: a read returns as soon as one period is in, so a
# deeper buffer only adds room for a late reader, not delay. Playback: a blocking write keeps the
# buffer full, so its size IS the delay from here to the speaker (4 x 20 ms held 60-80 ms), and
# the period is the chunk the FIFO in front must cover whatever the card's phase against the
# loop: 3 x 10 ms keep 20-30 ms queued with the same 20 ms of slack for a late thread as
# 2 x 20 ms, for half the chunk (benchmarks/latency_card.py); an underrun is recovered and
# counted (status: xruns).
CAPTURE_PERIODS = 4
PLAYBACK_PERIODS = 3


def _alsa() -> Any:
    try:
        import alsaaudio
    except ImportError as exc:  # pragma: no cover - the package is a dependency
        raise AudioError(f"pyalsaaudio is not installed: {exc}") from None
    return alsaaudio


def usb_card(capture: bool, root: str = "/proc/asound") -> str:
    """``usb`` in the configuration: the first USB sound card that has this direction, as an
    ALSA name by card id (``plughw:CARD=Device,DEV=0``): card numbers move between boots,
    ids do not."""
    what = "microphone input" if capture else "playback output"
    found = []
    for card in sorted(Path(root).glob("card[0-9]*"), key=lambda p: int(p.name[4:])):
        if not (card / "usbid").exists():
            continue  # not snd-usb-audio (the Pi's headphone jack, HDMI, an I2S HAT)
        pcm = "pcm0c" if capture else "pcm0p"
        if (card / pcm).exists():
            found.append((card / "id").read_text().strip())
    if not found:
        raise AudioError(f"no USB sound card with a {what} is plugged in (audio: usb)")
    return f"plughw:CARD={found[0]},DEV=0"


def resolve(device: str, capture: bool) -> str:
    """The ALSA PCM name for a configured device (``usb`` -> the USB card by its id)."""
    return usb_card(capture) if device == "usb" else device


def open_pcm(device: str, capture: bool, periods: int = 0) -> Any:
    alsa = _alsa()
    periods = periods or (CAPTURE_PERIODS if capture else PLAYBACK_PERIODS)
    device = resolve(device, capture)
    kind = alsa.PCM_CAPTURE if capture else alsa.PCM_PLAYBACK
    try:
        return alsa.PCM(type=kind, mode=alsa.PCM_NORMAL, rate=RATE, channels=1,
                        format=alsa.PCM_FORMAT_S16_LE,
                        periodsize=PERIOD if capture else PLAY_PERIOD, periods=periods,
                        device=device)
    except alsa.ALSAAudioError as exc:
        what = "capture" if capture else "playback"
        raise AudioError(f"ALSA {what} device {device!r} cannot be opened: {exc}") from None


def probe(device: str, capture: bool) -> str:
    """Open and close the device once: the ALSA name opened (``usb`` resolved now); raises
    AudioError with the reason when it is missing."""
    name = resolve(device, capture)
    open_pcm(name, capture).close()
    return name


class _Worker:
    """One side of a sound card by name. Opened when attached to a FIFO (its own thread: the
    mixed case, a ring tone); a call whose other side is a card too opens neither here: the
    loop drives both through ``firmware.core._card`` (``card_pcm`` is the name it opens)."""

    def __init__(self, device: str, capture: bool) -> None:
        self.device = device
        self.card_pcm = resolve(device, capture)  # `usb` with no USB card: AudioError now
        self.pcm: Any = None
        self._capture = capture
        self.xruns = 0
        self.errors = 0
        self.frames = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fifo: Any = None

    @property
    def latency_samples(self) -> int:
        """What the card adds to the speaker-to-microphone delay (echo cancellers line their
        reference up with it): a playback buffer kept full, one capture period."""
        return PERIOD if self._capture else PLAY_PERIOD * PLAYBACK_PERIODS

    def attach(self, fifo: Any) -> None:
        """Open the device and start moving audio to/from ``fifo`` (a ``_rtpcore.PcmFifo``);
        AudioError when it cannot be opened."""
        self.pcm = open_pcm(self.card_pcm, self._capture)
        self.fifo = fifo
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def read(self, samples: int) -> bytes:  # Source protocol: ALSA feeds the FIFO itself
        return b""

    def write(self, pcm: bytes) -> None:  # Sink protocol: ALSA drains the FIFO itself
        pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        if self.pcm is None:
            return
        try:
            self.pcm.close()
        except Exception:  # noqa: BLE001 - closing a device that vanished
            pass
        self.pcm = None


class AlsaSource(_Worker):
    """Captures 20 ms periods and pushes them into the stream's source FIFO."""

    def __init__(self, device: str) -> None:
        super().__init__(device, capture=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                length, data = self.pcm.read()
            except _alsa().ALSAAudioError as exc:
                self.errors += 1
                log.warning("ALSA capture error on %s: %s", self.device, exc)
                time.sleep(0.02)
                continue
            if length < 0:  # -EPIPE: overrun; pyalsaaudio has already re-prepared the PCM
                self.xruns += 1
                continue
            if length == 0:
                time.sleep(0.005)
                continue
            self.frames += length
            self.fifo.write(data)
            # unpaced plugins (file, null) deliver at once: never queue more than 100 ms
            while len(self.fifo) > RATE // 10 and not self._stop.is_set():
                time.sleep(0.02)


class AlsaSink(_Worker):
    """Pulls decoded PCM from the stream's sink FIFO and plays it."""

    def __init__(self, device: str) -> None:
        super().__init__(device, capture=False)

    def _run(self) -> None:
        # the device starts full of silence and every write is one whole period (what the loop
        # decoded, padded with silence when it is short): the blocking write is then the only
        # clock here, the device holds a steady PLAYBACK_PERIODS - 1 to PLAYBACK_PERIODS periods
        # from the first frame on, and the FIFO's level is what the drift control sees (a device
        # filled bit by bit early in the call made it misjudge the card's rate for seconds)
        silence = bytes(2 * PLAY_PERIOD)
        for _ in range(PLAYBACK_PERIODS):
            self._write(silence)
        start, written = time.monotonic(), 0
        while not self._stop.is_set():
            data = self.fifo.read(PLAY_PERIOD)
            if len(data) < 2 * PLAY_PERIOD:
                data += silence[len(data):]
            self._write(data)
            # a card blocks the write until a period is free; an unpaced plugin (file, null)
            # returns at once: never run more than the device's buffer ahead of real time
            written += PLAY_PERIOD
            ahead = start + written / RATE - time.monotonic()
            if ahead > 0.001:
                self._stop.wait(ahead)

    def _write(self, data: bytes) -> None:
        try:
            written = self.pcm.write(data)
        except _alsa().ALSAAudioError as exc:
            self.errors += 1
            log.warning("ALSA playback error on %s: %s", self.device, exc)
            time.sleep(0.02)
            return
        if written is not None and written < 0:  # -EPIPE: underrun, recovered by re-write
            self.xruns += 1
            self.pcm.write(data)
        self.frames += len(data) // 2
