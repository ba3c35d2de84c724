"""A simulated room for echo cancellers: speech from espeak-ng, an echo path, the metrics.

Owns generating speech-like test signals at test time (espeak-ng, never stored), the echo path
a door station's speaker takes to its microphone (FIFO/card delay the canceller is told about,
an acoustic delay it is not, a speaker that soft-clips, a room impulse response of exponentially
decaying noise at a fixed seed, a coupling level, background noise), driving a canceller frame
by frame through the Python face of the capture-processor hook, and the figures: ERLE,
convergence time, near-end preservation during double talk. Used by tests/unit/test_aec.py and
benchmarks/aec.py. Knows nothing about RTP or SIP.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from devtools.speech import espeak, resample

RATE = 8000
FRAME = 160  # 20 ms, the media loop's frame

FAR_TEXT = ("Hello, this is reception. Please look into the camera and tell me your name. "
            "The parcel can go into the box on the left side of the door. I will open the "
            "gate for you now, please push when you hear the buzzer. Thank you and goodbye. "
            "If nobody answers, please ring again in a few minutes, somebody will come down.")
NEAR_TEXT = ("Good morning, I have a delivery for apartment twelve, it needs a signature. "
             "Could you open the door please, it is raining quite hard out here today.")


@functools.lru_cache(maxsize=8)
def _speech(text: str, voice: str, speed: int) -> np.ndarray:
    x, rate = espeak(text, voice, speed)
    return resample(x, rate, RATE)


def speech(text: str, voice: str = "en", speed: int = 160, level_dbfs: float = -18.0,
           seconds: float | None = None) -> np.ndarray:
    """Speech at ``level_dbfs`` RMS (over its active part), looped/cut to ``seconds``."""
    x = _speech(text, voice, speed).copy()
    if seconds is not None:
        n = int(seconds * RATE)
        x = np.tile(x, n // len(x) + 1)[:n]
    active = np.abs(x) > 0.05 * np.abs(x).max()
    rms = np.sqrt(np.mean(x[active] ** 2))
    return x * (32768 * 10 ** (level_dbfs / 20) / rms)


@dataclass(frozen=True)
class Room:
    """The path from the far end's voice (as the box plays it) to the microphone."""

    delay_ms: float = 40.0      # acoustic + unknown delay: the canceller is not told
    fifo_ms: float = 0.0        # playback backlog the hook reports as ``queued``
    coupling_db: float = -10.0  # echo level against the played signal
    rir_ms: float = 40.0        # impulse response length
    decay_ms: float = 8.0       # its exponential decay time constant
    drive: float = 1.5          # speaker soft clip: tanh(drive*x)/drive on +-1 full scale
    noise_dbfs: float = -60.0   # background noise RMS (white, fixed seed)
    seed: int = 1

    def rir(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        n = int(self.rir_ms * RATE / 1000)
        h = rng.standard_normal(n) * np.exp(-np.arange(n) / (self.decay_ms * RATE / 1000))
        h[0] = 2.0  # the direct sound
        return h / np.sqrt(np.sum(h ** 2))

    def echo(self, played: np.ndarray) -> np.ndarray:
        """What the microphone picks up of ``played`` (float samples, int16 scale)."""
        x = played / 32768.0
        x = np.tanh(self.drive * x) / self.drive
        y = np.convolve(x, self.rir())[: len(x)]
        lag = int(round((self.delay_ms + self.fifo_ms) * RATE / 1000))
        y = np.concatenate([np.zeros(lag), y])[: len(x)]
        gain = 10 ** (self.coupling_db / 20) * np.sqrt(np.mean(x ** 2) / max(np.mean(y ** 2),
                                                                             1e-20))
        return y * gain * 32768.0

    def noise(self, n: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed + 1000)
        return rng.standard_normal(n) * 32768 * 10 ** (self.noise_dbfs / 20)


def to_pcm(x: np.ndarray) -> bytes:
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


def run(canceller: Any, played: np.ndarray, mic: np.ndarray, fifo_samples: int = 0) -> np.ndarray:
    """Drive ``canceller`` (a CaptureProcessor, or None for no processing) frame by frame as
    the media loop does: each tick one played frame (with the playback backlog it reports)
    then one captured frame; returns what the encoder would get."""
    n = min(len(played), len(mic)) // FRAME * FRAME
    pcm_played, pcm_mic = to_pcm(played[:n]), to_pcm(mic[:n])
    if canceller is None:
        return np.frombuffer(pcm_mic, dtype="<i2").astype(np.float64)
    out = bytearray()
    for i in range(0, 2 * n, 2 * FRAME):
        canceller.playback(pcm_played[i:i + 2 * FRAME], fifo_samples)
        out += canceller.capture(pcm_mic[i:i + 2 * FRAME], 0)
    return np.frombuffer(bytes(out), dtype="<i2").astype(np.float64)


def _db(num: float, den: float) -> float:
    return float(10 * np.log10(max(num, 1e-9) / max(den, 1e-9)))


def erle_db(mic: np.ndarray, out: np.ndarray, start_s: float, end_s: float) -> float:
    """Echo return loss enhancement over a far-end-only stretch: mic energy / output energy."""
    a, b = int(start_s * RATE), int(end_s * RATE)
    return _db(float(np.sum(mic[a:b] ** 2)), float(np.sum(out[a:b] ** 2)))


def erle_curve(mic: np.ndarray, out: np.ndarray, window_s: float = 0.5) -> np.ndarray:
    """ERLE per window (dB); windows where the microphone is nearly silent give NaN."""
    w = int(window_s * RATE)
    n = len(mic) // w
    pm = (mic[: n * w].reshape(n, w) ** 2).sum(axis=1)
    po = (out[: n * w].reshape(n, w) ** 2).sum(axis=1)
    curve = 10 * np.log10(np.maximum(pm, 1e-9) / np.maximum(po, 1e-9))
    curve[pm < 1e-3 * np.median(pm)] = np.nan
    return curve


def convergence_s(mic: np.ndarray, out: np.ndarray, from_s: float = 0.0,
                  target_db: float = 15.0, window_s: float = 0.5) -> float:
    """Seconds after ``from_s`` until the windowed ERLE first reaches ``target_db``
    (inf when it never does)."""
    a = int(from_s * RATE)
    curve = erle_curve(mic[a:], out[a:], window_s)
    hit = np.nonzero(np.nan_to_num(curve, nan=-99) >= target_db)[0]
    return float((hit[0] + 1) * window_s) if len(hit) else float("inf")


@dataclass(frozen=True)
class NearEnd:
    """How well the visitor's voice came through a double-talk stretch."""

    sdr_db: float        # near-end speech against everything else in the output
    mic_sdr_db: float    # the same for the unprocessed microphone (the echo left in)
    level_db: float      # the near-end component's level in the output against the input
    correlation: float   # output against the near-end-only signal
    lag_ms: float        # how much later the output carries it (the canceller's own latency)


def lag_samples(reference: np.ndarray, out: np.ndarray, most: int = 400) -> int:
    """The delay (0..most samples) at which ``out`` best matches ``reference``."""
    core = reference[most:-most]
    scores = [float(np.dot(out[most + k: most + k + len(core)], core)) for k in range(most)]
    return int(np.argmax(scores))


def near_end(near: np.ndarray, mic: np.ndarray, out: np.ndarray, start_s: float,
             end_s: float) -> NearEnd:
    """Project the output (shifted by the canceller's latency) onto the near-end-only signal
    over [start_s, end_s)."""
    a, b = int(start_s * RATE), int(end_s * RATE)
    lag = lag_samples(near[a:b], out[a:b])
    s, o, m = near[a:b - lag], out[a + lag:b], mic[a:b - lag]
    ss = float(np.dot(s, s))
    g = float(np.dot(o, s)) / ss
    gm = float(np.dot(m, s)) / ss
    return NearEnd(
        sdr_db=_db(g * g * ss, float(np.sum((o - g * s) ** 2))),
        mic_sdr_db=_db(gm * gm * ss, float(np.sum((m - gm * s) ** 2))),
        level_db=float(20 * np.log10(max(abs(g), 1e-9))),
        correlation=float(np.dot(o, s) / np.sqrt(ss * float(np.dot(o, o)) + 1e-9)),
        lag_ms=lag * 1000 / RATE)


@dataclass(frozen=True)
class Scenario:
    """A call: far-end speech throughout; the visitor talks over it from ``dt_start_s``
    (double talk); the echo path changes at ``change_s`` (the box's door or a person moved)."""

    seconds: float = 24.0
    dt_start_s: float = 10.0
    dt_end_s: float = 14.0
    change_s: float = 16.0
    room: Room = Room()
    changed: Room = Room(delay_ms=55.0, coupling_db=-8.0, seed=7)
    near_dbfs: float = -20.0

    def signals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(played, near-end only, microphone) as float arrays."""
        n = int(self.seconds * RATE)
        played = speech(FAR_TEXT, "en", 160, -16.0, self.seconds)
        near = np.zeros(n)
        a, b = min(int(self.dt_start_s * RATE), n), min(int(self.dt_end_s * RATE), n)
        if b > a:
            near[a:b] = speech(NEAR_TEXT, "en+f3", 170, self.near_dbfs, (b - a) / RATE)[:b - a]
        c = int(self.change_s * RATE)
        echo = np.concatenate([self.room.echo(played)[:c], self.changed.echo(played)[c:]])
        mic = echo + near + self.room.noise(n)
        return played, near, np.clip(mic, -32768, 32767)


@dataclass(frozen=True)
class Report:
    erle_db: float          # converged, far-end only, before double talk
    convergence_s: float    # to 15 dB ERLE from the start
    near: NearEnd           # during double talk
    erle_after_dt_db: float  # far-end only between double talk and the path change
    reconverge_s: float     # to 15 dB ERLE after the path change
    erle_changed_db: float  # converged again, after the change


def measure(canceller: Any, sc: Scenario | None = None) -> Report:
    sc = sc or Scenario()
    played, near, mic = sc.signals()
    fifo = int(sc.room.fifo_ms * RATE / 1000)
    return report(sc, near, mic, run(canceller, played, mic, fifo))


def report(sc: Scenario, near: np.ndarray, mic: np.ndarray, out: np.ndarray) -> Report:
    """The figures of ``out``, what a canceller made of ``mic`` in scenario ``sc``."""
    n = len(out)
    near, mic = near[:n], mic[:n]
    return Report(
        erle_db=erle_db(mic, out, 5.0, sc.dt_start_s),
        convergence_s=convergence_s(mic, out),
        near=near_end(near, mic, out, sc.dt_start_s, sc.dt_end_s),
        erle_after_dt_db=erle_db(mic, out, sc.dt_end_s + 0.5, sc.change_s),
        reconverge_s=convergence_s(mic, out, sc.change_s),
        erle_changed_db=erle_db(mic, out, sc.change_s + 4.0, sc.seconds))
