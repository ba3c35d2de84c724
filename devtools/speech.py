"""Speech test signals and their scores: espeak-ng rendered at run time to 8 kHz mono 16-bit,
and PESQ (ITU-T P.862 narrow band) against the clean reference.

Owns nothing of the firmware: tests and benchmarks use it to make and judge audio. Generated
audio is never committed; espeak-ng (Debian) renders the same text to the same samples.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

SENTENCES = (
    "Hello, this is the front door. I have a parcel for flat number twelve. "
    "Could you please open the door for me? Thank you very much, have a nice day."
)


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    """Band-limited resampling by FFT (the whole signal at once: test material only)."""
    n_out = int(round(len(x) * to / rate))
    spectrum = np.fft.rfft(x)
    keep = n_out // 2 + 1
    out = np.zeros(keep, dtype=complex)
    m = min(keep, len(spectrum))
    out[:m] = spectrum[:m]
    # a gentle roll-off over the last 300 Hz before the new Nyquist frequency
    freqs = np.arange(keep) * to / n_out
    roll = np.clip((to / 2 - freqs) / 300.0, 0.0, 1.0)
    return np.fft.irfft(out * roll, n_out) * (n_out / len(x))


def espeak(text: str, voice: str = "en", speed: int = 150) -> tuple[np.ndarray, int]:
    """``text`` spoken by espeak-ng: float samples at espeak's own rate, and that rate."""
    if not have_espeak():
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng; build.sh "
                           "installs it): the speech and room tests render their speech with it")
    with tempfile.TemporaryDirectory(prefix="intercom-speech-") as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
                       check=True, capture_output=True, timeout=60)
        with wave.open(str(path), "rb") as w:
            return (np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64),
                    w.getframerate())


def speech(text: str = SENTENCES, rate: int = 8000, level_dbfs: float = -20.0) -> np.ndarray:
    """``text`` spoken by espeak-ng as float samples at ``rate``, normalised to ``level_dbfs`` RMS
    over the active part."""
    x, src_rate = espeak(text)
    y = resample(x, src_rate, rate)
    active = y[np.abs(y) > 0.01 * np.abs(y).max()]
    rms = np.sqrt(np.mean(active ** 2))
    return y * (32768 * 10 ** (level_dbfs / 20) / rms)


def to_pcm(x: np.ndarray) -> bytes:
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


def align(reference: np.ndarray, degraded: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
    """``degraded`` shifted to line up with ``reference`` (cross-correlation within
    ``max_lag`` samples) and cut to its length; returns (aligned, lag in samples)."""
    n = len(reference)
    seg = degraded[: n + max_lag]
    if len(seg) < n + max_lag:
        seg = np.concatenate([seg, np.zeros(n + max_lag - len(seg))])
    size = 1 << int(np.ceil(np.log2(len(seg) + n)))
    corr = np.fft.irfft(np.fft.rfft(seg, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(corr[: max_lag + 1]))
    return seg[lag: lag + n], lag


def pesq_nb(reference: np.ndarray, degraded: np.ndarray, rate: int = 8000) -> float:
    """P.862 narrow-band MOS-LQO of ``degraded`` against ``reference`` (same rate, aligned
    roughly; P.862 does its own fine alignment)."""
    from pesq import pesq  # the test extra; imported here so the module loads without it

    n = min(len(reference), len(degraded))
    ref = np.clip(reference[:n], -32768, 32767).astype(np.int16)
    deg = np.clip(degraded[:n], -32768, 32767).astype(np.int16)
    return float(pesq(rate, ref, deg, "nb"))
