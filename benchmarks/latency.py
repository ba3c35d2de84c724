"""Mouth-to-ear latency through the box: a click track as the box's microphone, a call to
Asterisk's Echo() (extension 600) on loopback, and the box's loudspeaker recorded; the delay
is found by locating every click in what was played.

Both files are indexed by the 20 ms loop's ticks (the loop pulls one frame from the capture FIFO
and pushes one to the playback FIFO per tick), so the lag in samples is the time from the tick
that sends a click to the tick that plays it: the jitter buffer, the frame/tick alignment and the
loopback network and Asterisk, both ways. The jitter buffer's part is sampled from ``status``
during the call. What this does not include: a sound card's own ALSA buffers and the capture
FIFO in front of the loop (a file source is read ahead by the pump; only a live card shows that
wait), the room, the far end: ``benchmarks/latency_card.py`` measures the ALSA path.
"""

from __future__ import annotations

import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from devtools.asterisk import Asterisk
from devtools.box.process import Intercom
from devtools.waiting import wait_for
from firmware.media.stream import StreamSettings

PERIOD = 5600  # samples between clicks (700 ms: longer than any plausible round trip)


CLICK = 80  # samples: a 10 ms chirp


def chirp() -> np.ndarray:
    """A 10 ms rising chirp (300 Hz to 3 kHz), Hann-windowed, peak 1."""
    t = np.arange(CLICK) / 8000
    return np.sin(2 * np.pi * (300 * t + 0.5 * 270000 * t * t)) * np.hanning(CLICK)


def click_track(n: int, amplitude: float) -> np.ndarray:
    """``n`` samples: a chirp of ``amplitude`` every 700 ms from sample 800."""
    x = np.zeros(n)
    for start in range(800, n - CLICK, PERIOD):
        x[start:start + CLICK] = amplitude * chirp()
    return x


def click_starts(n: int) -> range:
    """Where the clicks of a track start that can be looked for in ``n`` samples."""
    return range(800, n - PERIOD, PERIOD)


def click_lag(heard: np.ndarray, start: int, amplitude: float) -> float | None:
    """The lag (samples) of the click sent at ``start`` in what was heard after it, or None
    when nothing there correlates with it at a fifth of ``amplitude``."""
    seg = heard[start:start + PERIOD - 400]
    if len(seg) < PERIOD - 400:
        return None
    template = chirp()
    corr = np.correlate(seg, template, mode="valid")
    k = int(np.argmax(np.abs(corr)))
    return float(k) if abs(corr[k]) > 0.2 * amplitude * np.sum(template ** 2) else None


def click_wav(path: Path, seconds: float) -> Path:
    """A 10 ms rising chirp (300 Hz to 3 kHz) every 700 ms."""
    x = click_track(int(8000 * seconds), 16000)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(x.astype("<i2").tobytes())
    return path


def lags_ms(sent: np.ndarray, heard: np.ndarray) -> list[float]:
    """For every click sent, the delay (ms) of the best match in what was heard after it."""
    lags = (click_lag(heard, start, 16000) for start in click_starts(len(sent)))
    return [lag / 8.0 for lag in lags if lag is not None]


def run(seconds: float) -> dict:
    pbx = Asterisk().start()
    tmp = Path(tempfile.mkdtemp(prefix="intercom-bench-latency-"))
    box: Intercom | None = None
    depths, targets = [], []
    try:
        src = click_wav(tmp / "clicks.wav", seconds + 60)
        heard = tmp / "heard.wav"
        box = Intercom(tmp / "box", pbx.port, audio={"capture": f"wav:{src}",
                                                      "playback": f"wav:{heard}"},
                       log_level="info").start()
        wait_for(lambda: box.status().get("state") == "idle", 15, 0.1, "registration")
        assert box.cmd("call", "600")["ok"]
        wait_for(lambda: box.status().get("state") == "in_call", 15, 0.1, "the echo call")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rtp = box.status().get("rtp") or {}
            if "buffer_depth_ms" in rtp:
                depths.append(rtp["buffer_depth_ms"])
                targets.append(rtp["buffer_target_ms"])
            time.sleep(0.25)
        box.cmd("hangup")
        box.stop()
        with wave.open(str(heard), "rb") as w:
            played = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float)
        with wave.open(str(src), "rb") as w:
            sent = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float)
    finally:
        if box is not None:
            box.stop()
        pbx.cleanup()
    lags = lags_ms(sent[: len(played)], played)
    if not lags:
        raise RuntimeError("no click came back through Asterisk's Echo()")
    return {"lags": lags, "jb_depth": float(np.mean(depths)) if depths else float("nan"),
            "jb_target": float(np.median(targets)) if targets else float("nan"),
            "prefill": StreamSettings().prefill_ms, "depths": depths}


def table(r: dict) -> str:
    lags = np.array(r["lags"])
    total = float(np.median(lags))
    steady = float(np.median(lags[-5:]))
    jb = r["jb_depth"]
    rest = total - jb
    out = ["| part (box -> Asterisk Echo -> box, loopback) | ms | vs the 80 ms target |",
           "|---|---:|---:|",
           f"| round trip, click to click, loop-tick domain (median of {len(lags)}; min "
           f"{lags.min():.0f}, max {lags.max():.0f}; last five {steady:.0f}) | {total:.0f} | "
           f"{total / 80:.2f}x |",
           f"| of which the jitter buffer (mean depth; its target ends at {r['jb_target']:.0f}) "
           f"| {jb:.0f} | {jb / 80:.2f}x |",
           f"| of which the rest: frame/tick alignment, network, Asterisk | {rest:.0f} | |",
           "| the box's own share with a sound card's buffers: the next table | | |"]
    return "\n".join(out)
