"""ALSA capture and playback through pyalsaaudio: 8 kHz mono S16_LE via the ``plug`` layer,
20 ms periods, one thread per direction feeding the media stream's FIFOs directly.

Owns opening devices by name (with a clear error when one is missing), xrun recovery that keeps
the call going, and pacing for ALSA plugins that are not (file/null). Knows nothing about RTP
or SIP: it moves PCM between a device and a FIFO.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from .audio import AudioError

log = logging.getLogger("intercom.alsa")
RATE, PERIOD = 8000, 160  # samples: 20 ms
PERIODS = 4  # periods in the device buffer


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


def open_pcm(device: str, capture: bool, periods: int = PERIODS) -> Any:
    alsa = _alsa()
    device = resolve(device, capture)
    kind = alsa.PCM_CAPTURE if capture else alsa.PCM_PLAYBACK
    try:
        return alsa.PCM(type=kind, mode=alsa.PCM_NORMAL, rate=RATE, channels=1,
                        format=alsa.PCM_FORMAT_S16_LE, periodsize=PERIOD, periods=periods,
                        device=device)
    except alsa.ALSAAudioError as exc:
        what = "capture" if capture else "playback"
        raise AudioError(f"ALSA {what} device {device!r} cannot be opened: {exc}") from None


def probe(device: str, capture: bool) -> None:
    """Open and close the device once: raises AudioError with the reason when it is missing."""
    open_pcm(device, capture).close()


class _Worker:
    def __init__(self, device: str, capture: bool) -> None:
        self.device = device
        self.pcm = open_pcm(device, capture)
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
        return PERIOD if self._capture else PERIOD * PERIODS

    def attach(self, fifo: Any) -> None:
        """Start moving audio to/from ``fifo`` (a ``_rtpcore.PcmFifo``)."""
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
        try:
            self.pcm.close()
        except Exception:  # noqa: BLE001 - closing a device that vanished
            pass


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
        while not self._stop.is_set():
            data = self.fifo.read(PERIOD)
            if not data:
                # nothing decoded yet: the loop pushes one frame per 20 ms and the device holds
                # several periods, so one period's wait (not half of one) is enough
                time.sleep(0.02)
                continue
            try:
                written = self.pcm.write(data)
            except _alsa().ALSAAudioError as exc:
                self.errors += 1
                log.warning("ALSA playback error on %s: %s", self.device, exc)
                time.sleep(0.02)
                continue
            if written is not None and written < 0:  # -EPIPE: underrun, recovered by re-write
                self.xruns += 1
                self.pcm.write(data)
            self.frames += len(data) // 2
