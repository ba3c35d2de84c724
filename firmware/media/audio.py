"""Audio sources and sinks: 16-bit little-endian mono PCM at 8 kHz, in frames of any size.

Owns the small source/sink interface the media stream pumps, and the implementations that need
no sound card: WAV file source and sink, tone generator, silence, null sink. (ALSA devices plug
in behind the same interface.) Also what a source or sink is underneath, for a stream that can
do without Python: ``cycle()`` (the source is one stretch of PCM repeated forever) and
``discards`` (the sink keeps nothing). Knows nothing about RTP, SIP or timing.
"""

from __future__ import annotations

import math
import struct
import threading
import wave
from pathlib import Path
from typing import Protocol

RATE = 8000


class AudioError(Exception):
    """An audio device or file could not be used; the message says which and why."""


class Source(Protocol):
    def read(self, samples: int) -> bytes:
        """Up to ``samples`` samples; b"" when the source has nothing more to give."""

    def close(self) -> None: ...


class Sink(Protocol):
    def write(self, pcm: bytes) -> None: ...

    def close(self) -> None: ...


def cycle_of(source: Source) -> bytes | None:
    """What ``source`` gives from now on when that is one stretch of PCM repeated forever (its
    ``cycle()``), else None. ``source.read(n)`` afterwards moves it on as if ``n`` samples of
    that stretch had been read."""
    cycle = getattr(source, "cycle", None)
    return cycle() if callable(cycle) else None


def discards(sink: Sink) -> bool:
    """True when writing to ``sink`` keeps nothing, so the audio need not reach it at all."""
    return getattr(sink, "discards", False) is True


class ToneSource:
    """A continuous sine tone (phase kept across reads)."""

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.3) -> None:
        if not 0 < frequency < RATE / 2:
            raise AudioError(f"tone frequency {frequency} Hz is outside 0..{RATE // 2} Hz")
        self.frequency = frequency
        self.amplitude = max(0.0, min(amplitude, 1.0)) * 32767
        self._n = 0
        # a whole number of Hz repeats exactly every second: one second computed once, then
        # sliced (a per-sample sin() in Python was most of the audio pump's CPU in a call)
        self._second = self._samples(0, RATE) if float(frequency).is_integer() else b""

    def _samples(self, start: int, count: int) -> bytes:
        w = 2 * math.pi * self.frequency / RATE
        return struct.pack(f"<{count}h", *(int(self.amplitude * math.sin(w * (start + i)))
                                           for i in range(count)))

    def cycle(self) -> bytes | None:
        """One period from the current phase, when the tone has one within a second (a whole
        number of Hz): the same samples ``read`` would give, repeated."""
        if not self._second:
            return None
        pos = self._n % RATE
        return self._second[2 * pos:] + self._second[:2 * pos]

    def read(self, samples: int) -> bytes:
        start = self._n
        self._n += samples
        if not self._second:
            return self._samples(start, samples)
        pos = start % RATE
        if pos + samples <= RATE:  # within the second: one slice
            return self._second[2 * pos: 2 * (pos + samples)]
        out = bytearray()
        while len(out) < 2 * samples:
            take = min(RATE - pos, samples - len(out) // 2)
            out += self._second[2 * pos: 2 * (pos + take)]
            pos = 0
        return bytes(out)

    def close(self) -> None:
        pass


class SilenceSource:
    def cycle(self) -> bytes:
        return bytes(2 * RATE // 50)

    def read(self, samples: int) -> bytes:
        return bytes(2 * samples)

    def close(self) -> None:
        pass


class WavSource:
    """A WAV file, converted to 8 kHz mono 16-bit on load; optionally looped."""

    def __init__(self, path: str | Path, loop: bool = True) -> None:
        self.pcm = read_wav(path)
        self.loop = loop
        self._pos = 0

    def read(self, samples: int) -> bytes:
        if not self.pcm:
            return b""
        out = bytearray()
        want = samples * 2
        while len(out) < want:
            chunk = self.pcm[self._pos:self._pos + want - len(out)]
            out += chunk
            self._pos += len(chunk)
            if self._pos >= len(self.pcm):
                if not self.loop:
                    break
                self._pos = 0
        return bytes(out)

    def close(self) -> None:
        pass


class WavSink:
    """Writes what it is given to an 8 kHz mono 16-bit WAV file."""

    def __init__(self, path: str | Path) -> None:
        try:
            self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise AudioError(f"cannot write {path}: {exc}") from None
        self._wav = wave.open(self._file, "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(RATE)
        self._lock = threading.Lock()
        self.samples = 0

    def write(self, pcm: bytes) -> None:
        with self._lock:
            self._wav.writeframes(pcm)
            self.samples += len(pcm) // 2

    def close(self) -> None:
        with self._lock:
            self._wav.close()
            self._file.close()


class NullSink:
    """Keeps nothing. ``samples`` counts what went through ``write``; a stream that sees
    ``discards`` drops its audio without calling ``write`` at all."""

    discards = True

    def __init__(self) -> None:
        self.samples = 0

    def write(self, pcm: bytes) -> None:
        self.samples += len(pcm) // 2

    def close(self) -> None:
        pass


def read_wav(path: str | Path) -> bytes:
    """Any PCM WAV -> 8 kHz mono 16-bit little-endian (channels averaged, linear resampling)."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioError(f"cannot read WAV file {path}: {exc}") from None
    if width not in (1, 2, 4):
        raise AudioError(f"{path}: unsupported sample width {width * 8} bits")
    count = len(raw) // (width * channels)
    if width == 1:
        values = [(b - 128) << 8 for b in raw]
    else:
        values = list(struct.unpack(f"<{count * channels}{'h' if width == 2 else 'i'}",
                                    raw[: count * channels * width]))
        if width == 4:
            values = [v >> 16 for v in values]
    mono = [sum(values[i * channels:(i + 1) * channels]) // channels for i in range(count)]
    if rate != RATE and mono:
        step = rate / RATE
        out_len = int(len(mono) / step)
        mono = [_interp(mono, i * step) for i in range(out_len)]
    return struct.pack(f"<{len(mono)}h", *mono)


def _interp(x: list[int], pos: float) -> int:
    i = int(pos)
    frac = pos - i
    nxt = x[i + 1] if i + 1 < len(x) else x[i]
    return int(x[i] + (nxt - x[i]) * frac)


def open_source(spec: str) -> Source:
    """``tone:440[:0.3]``, ``wav:/path/file.wav``, ``silence``."""
    kind, _, arg = spec.partition(":")
    if kind == "tone":
        freq, _, amp = arg.partition(":")
        try:
            return ToneSource(float(freq or 440), float(amp or 0.3))
        except ValueError:
            raise AudioError(f"bad tone source {spec!r} (tone:HZ[:AMPLITUDE])") from None
    if kind == "wav":
        return WavSource(arg)
    if spec in ("silence", "null"):
        return SilenceSource()
    raise AudioError(f"unknown audio source {spec!r}")


def open_sink(spec: str) -> Sink:
    """``wav:/path/file.wav`` or ``null``."""
    kind, _, arg = spec.partition(":")
    if kind == "wav":
        return WavSink(arg)
    if spec == "null":
        return NullSink()
    raise AudioError(f"unknown audio sink {spec!r}")
