"""Test tones, the one place they are made: a sine as samples, as 16-bit PCM (what the media
core, the jitter buffer and the ALSA sink are fed) and as a WAV file (Chromium's fake
microphone, baresip's source). Judging audio by its content is ``tests/audio.py``'s."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path


def sine(hz: float, n: int, start: int = 0, amplitude: float = 8000.0,
         rate: int = 8000) -> list[float]:
    """``n`` samples of ``amplitude * sin(2 pi hz t)`` from sample ``start`` on."""
    return [amplitude * math.sin(2 * math.pi * hz * (start + i) / rate) for i in range(n)]


def tone_pcm(hz: float, n: int, start: int = 0, amplitude: float = 8000.0,
             rate: int = 8000) -> bytes:
    """The same as signed 16-bit little-endian PCM, each sample truncated toward zero."""
    return struct.pack(f"<{n}h", *(int(x) for x in sine(hz, n, start, amplitude, rate)))


def tone_wav(path: Path, hz: float, seconds: float = 10.0, rate: int = 48000,
             amplitude: float = 0.3) -> Path:
    """A mono 16-bit WAV of a sine tone at ``amplitude`` of full scale (Chromium's fake
    microphone loops it)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone_pcm(hz, int(rate * seconds), amplitude=32767 * amplitude,
                               rate=rate))
    return path
