"""QEMU's ``usb-audio`` device (a USB Audio Class speaker, driven in the guest by
snd-usb-audio) played into a WAV file on the host, and what the guest's ``audio: usb``
resolved to.

Owns: the QEMU arguments for the device behind an xHCI controller and its ``wav`` audiodev,
reading that WAV back after QEMU was killed, measuring a tone in it, and finding the USB card
in the guest's /proc/asound as the selftest reporter prints it (INTERCOM-SOUND). Knows nothing
about the call that plays or the box's configuration.

What it does not prove about a real dongle: its clock is QEMU's (the wav backend takes frames
at the virtual clock's pace: no crystal drifting against the Pi's, no adaptive/asynchronous
feedback to follow), there is no real USB timing (isochronous transfers are emulated: nothing
is late or lost on a bus, no hub, no power), and it is playback only (QEMU's usb-audio has no
microphone, so ``audio: usb`` on the capture side is not exercised here).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import peak_hz, tone_frames, tone_snr_db

RATE = 48000
CHANNELS = 2
HEADER = 44  # the canonical WAV header QEMU's wav audiodev writes
# A card in /proc/asound/cards: number, id (in brackets: what ``audio: usb`` resolves to) and
# driver; snd-usb-audio's is "USB-Audio" (" 0 [Audio   ]: USB-Audio - QEMU USB Audio").
CARD = re.compile(r"^\s*(\d+)\s+\[(\S+)\s*\]:\s+(\S+)", re.M)


def usb_audio_args(wav: Path, audiodev: str = "usbsnd") -> list[str]:
    """An xHCI controller with QEMU's usb-audio on it, played into ``wav`` (48 kHz, stereo,
    16 bit: what the device offers the guest)."""
    return ["-device", "qemu-xhci", "-device", f"usb-audio,audiodev={audiodev}",
            "-audiodev", f"wav,id={audiodev},path={wav},out.frequency={RATE},"
            f"out.channels={CHANNELS},out.format=s16"]


def wav_samples(path: Path) -> np.ndarray:
    """The frames QEMU wrote so far, mono (channels averaged), int16 scale. The wav audiodev
    writes its header's sizes only at a clean exit and the guest is killed, so the frames after
    the 44-byte header are read as they are."""
    raw = path.read_bytes()[HEADER:] if path.exists() else b""
    frame = 2 * CHANNELS
    x = np.frombuffer(raw[: len(raw) // frame * frame], dtype="<i2").astype(np.float64)
    return x.reshape(-1, CHANNELS).mean(axis=1)


def tone_after(x: np.ndarray, hz: float, skip: float, seconds: float,
               loud: float = 1000) -> dict[str, float]:
    """The first sound in ``x`` louder than ``loud``; from ``skip`` seconds after it, one
    stretch of ``seconds``: its FFT peak and SNR (around ``hz``). From ``skip`` to the last
    loud sample: the share of clean 20 ms frames (``clean``: the tone holds 90 % of a frame's
    energy; a glitch spoils the frames it falls in, where one SNR over the whole is spread by
    every glitch) and the SNR of each whole second (``worst_snr_db``, ``median_snr_db``).
    Asserts there is sound and enough of it."""
    over = np.abs(x) > loud
    assert over.any(), f"the USB speaker stayed silent ({len(x) / RATE:.1f} s of frames)"
    first = int(np.argmax(over))
    start, end = first + int(skip * RATE), first + int((skip + seconds) * RATE)
    assert len(x) >= end, (f"the USB speaker played {(len(x) - first) / RATE:.1f} s from its "
                           f"first sound, less than {skip + seconds:.1f} s")
    last = len(x) - int(np.argmax(over[::-1]))  # after the last loud sample
    segment = x[start:end]
    per_second = [tone_snr_db(x[i: i + RATE], hz, RATE)
                  for i in range(start, last - RATE + 1, RATE)]
    return {"peak_hz": peak_hz(segment, RATE), "snr_db": tone_snr_db(segment, hz, RATE),
            "clean": tone_frames(x[start:last], hz, RATE, frame=RATE // 50),
            "played_s": (last - first) / RATE, "seconds": len(per_second),
            "worst_snr_db": float(min(per_second)),
            "median_snr_db": float(np.median(per_second))}


def sound_cards(sound: dict[str, Any]) -> list[tuple[int, str, str]]:
    """The cards (number, id, driver) in one INTERCOM-SOUND report."""
    return [(int(n), ident, driver) for n, ident, driver in CARD.findall(sound.get("cards", ""))]


def usb_card(sound: dict[str, Any]) -> tuple[int, str] | None:
    """The first USB card (number, id) in one INTERCOM-SOUND report, or None."""
    return next(((n, ident) for n, ident, driver in sound_cards(sound)
                 if driver == "USB-Audio"), None)


def open_playback(sound: dict[str, Any], card: int) -> str | None:
    """The hw_params of ``card``'s open playback PCM in one INTERCOM-SOUND report, or None."""
    return next((v for k, v in sound.items() if k.startswith(f"card{card}/pcm")
                 and k.split("/")[1].endswith("p")), None)
