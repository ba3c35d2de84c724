"""Helpers that judge audio by its content."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def pcm_array(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def wav_array(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    assert width == 2, f"{path}: {width * 8}-bit"
    x = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    return x, rate


def peak_hz(x: np.ndarray, rate: int = 8000) -> float:
    """Frequency of the strongest FFT bin (Hann window)."""
    assert len(x) > rate // 10, "less than 100 ms of audio"
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(spectrum.argmax())])


def tone_snr_db(x: np.ndarray, hz: float, rate: int = 8000) -> float:
    """Energy within +-20 Hz of ``hz`` against everything else."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    band = np.abs(freqs - hz) <= 20
    return float(10 * np.log10(spectrum[band].sum() / max(spectrum[~band].sum(), 1e-9)))


def tone_frames(x: np.ndarray, hz: float, rate: int = 8000, frame: int = 160,
                purity: float = 0.9) -> float:
    """The share of ``frame``-sample frames of ``x`` in which the tone ``hz`` (its FFT bin and
    the two beside it) holds at least ``purity`` of the energy: a signal cut by gaps or
    splices of silence scores the frames between them, where one SNR over the whole would
    be spread by every edge. ``frame`` must hold whole cycles of ``hz``."""
    k = hz * frame / rate
    assert abs(k - round(k)) < 1e-9, f"{frame} samples hold no whole number of {hz} Hz cycles"
    n = len(x) // frame
    assert n > 0, "less than one frame"
    power = np.abs(np.fft.rfft(x[: n * frame].reshape(n, frame), axis=1)) ** 2
    power[:, 0] = 0
    k = int(round(k))
    band = power[:, max(k - 1, 1):k + 2].sum(axis=1)
    total = power.sum(axis=1)
    return float(((total > 0) & (band >= purity * total)).mean())


def frame_rms(x: np.ndarray, frame: int = 160) -> np.ndarray:
    n = len(x) // frame
    return np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1))


def baresip_heard(record: Path, last_call: bool = False) -> tuple[np.ndarray, int]:
    """What baresip decoded in a call: the largest ``*dec*`` WAV its sndfile module wrote (with
    ``last_call``: the newest, when one phone had several calls)."""
    decoded = [p for p in record.glob("*.wav") if "dec" in p.name]
    assert decoded, f"baresip recorded nothing: {list(record.iterdir())}"
    key = (lambda p: p.stat().st_mtime) if last_call else (lambda p: p.stat().st_size)
    return wav_array(max(decoded, key=key))


class Recorder:
    """An audio sink for RtpSession that keeps every PCM byte it is given."""

    def __init__(self) -> None:
        self.pcm = bytearray()

    def write(self, pcm: bytes) -> None:
        self.pcm += pcm

    def close(self) -> None:
        pass
