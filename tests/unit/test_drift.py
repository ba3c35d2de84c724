"""Clock drift between the sound card and the 20 ms loop, an hour of call on a virtual clock.

A simulated card runs ``ppm`` off the loop: it drains the real playback ``PcmFifo`` and fills
the real capture ``PcmFifo`` one 20 ms period (of its own clock) at a time, while the loop side
goes through ``firmware._drift.DriftCompensator`` exactly as the media thread does. The FIFOs
must stay bounded, the drift estimate must find the card's rate, and a 1013 Hz tone (not a
multiple of 50 Hz, so a dropped or repeated sample would show) must come through without a
discontinuity or spectral spread beyond a clean tone's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from firmware._drift import DriftCompensator
from firmware._rtpcore import PcmFifo

RATE, FS, HZ, AMP = 8000, 160, 1013.0, 12000.0
CARD_PERIOD = 160  # frames per card period, in the card's own clock


def clean_step() -> float:
    """The largest sample-to-sample change of a clean tone at HZ."""
    return 2 * AMP * math.sin(math.pi * HZ / RATE)


class Card:
    """A sound card whose crystal runs ``ppm`` off: periods at 20 ms * (1 - ppm 1e-6)."""

    def __init__(self, ppm: float, phase: float = 0.37) -> None:
        self.period_s = CARD_PERIOD / (RATE * (1 + ppm * 1e-6))
        self.next_play = self.next_cap = 1.0 + phase * self.period_s
        self.cap_n = 0  # capture samples taken so far (the card's sample index)
        self.rate = RATE * (1 + ppm * 1e-6)

    def run_until(self, t: float, play: PcmFifo, cap: PcmFifo, played: list) -> int:
        """Move the card's periods up to ``t``; returns how many periods found too little."""
        short = 0
        while self.next_play <= t:
            played.append(play.read(CARD_PERIOD, now_ns=round(self.next_play * 1e9)))
            short += len(played[-1]) < 2 * CARD_PERIOD
            self.next_play += self.period_s
        while self.next_cap <= t:
            n = np.arange(self.cap_n, self.cap_n + CARD_PERIOD)
            # the same acoustic 1013 Hz sampled by the card's clock
            cap.write((AMP * np.sin(2 * np.pi * HZ * n / self.rate)).astype("<i2").tobytes(),
                      now_ns=round(self.next_cap * 1e9))
            self.cap_n += CARD_PERIOD
            self.next_cap += self.period_s
        return short


def simulate(ppm: float, seconds: float, enabled: bool = True) -> dict:
    comp = DriftCompensator(FS, enabled, enabled)
    play, cap = PcmFifo(8000), PcmFifo(8000)
    card = Card(ppm)
    played: list[bytes] = []
    captured: list[bytes] = []
    play_max = cap_max = 0
    underruns = card_short = 0
    for k in range(int(seconds * 50)):
        t = k * 0.02 + 1.0
        now = round(t * 1e9)
        short = card.run_until(t, play, cap, played)
        card_short += short if k > 50 else 0
        # the loop: capture side first, then playback, as MediaStream._tick does
        need = comp.capture_need(len(cap), now - cap.last_push_ns)
        frame, got = comp.capture(cap.read(need))
        if k > 5:
            underruns += got < FS
            captured.append(frame)
        n = np.arange(k * FS, (k + 1) * FS)
        tone = (AMP * np.sin(2 * np.pi * HZ * n / RATE)).astype("<i2").tobytes()
        play.write(comp.playback(tone, len(play), now - play.last_pull_ns))
        play_max, cap_max = max(play_max, len(play)), max(cap_max, len(cap))
    return {"comp": comp, "played": played, "captured": captured, "play_max": play_max,
            "cap_max": cap_max, "play_overruns": play.overruns, "cap_overruns": cap.overruns,
            "underruns": underruns, "card_short": card_short}


def glitches(chunks: list[bytes], skip_s: float = 2.0) -> tuple[float, float]:
    """(largest sample step / a clean tone's, worst out-of-band energy in dB over 1 s windows)."""
    x = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float64)[int(skip_s * RATE):]
    x = x[:len(x) - len(x) % RATE]
    step = float(np.abs(np.diff(x)).max()) / clean_step()
    windows = x.reshape(-1, RATE) * np.hanning(RATE)
    spectra = np.abs(np.fft.rfft(windows, axis=1)) ** 2
    peak = spectra.argmax(axis=1)
    bins = np.arange(spectra.shape[1])
    band = np.abs(bins[None, :] - peak[:, None]) <= 20  # 1 Hz bins: +-20 Hz around the tone
    spread = 10 * np.log10((spectra * ~band).sum(axis=1) / (spectra * band).sum(axis=1))
    return step, float(spread.max())


@pytest.mark.parametrize("ppm", [200.0, -200.0])
def test_an_hour_at_200_ppm_stays_bounded_without_a_glitch(ppm: float) -> None:
    r = simulate(ppm, 3600.0)
    assert len(r["played"]) > 179_000  # an hour of card periods
    comp = r["comp"]
    # bounded: without compensation an hour at 200 ppm is 5760 samples (0.72 s) of slip
    assert r["play_max"] <= 3 * FS and r["cap_max"] <= 3 * FS, (r["play_max"], r["cap_max"])
    assert r["play_overruns"] == r["cap_overruns"] == 0
    assert r["underruns"] == 0 and r["card_short"] == 0, "a FIFO ran dry"
    st = comp.stats()
    assert abs(st["drift_ppm"] - ppm) < 10, st
    assert abs(st["playback_drift_ppm"] - ppm) < 15 and abs(st["capture_drift_ppm"] - ppm) < 15
    for chunks in (r["played"], r["captured"]):
        step, spread = glitches(chunks)
        assert step < 1.02, f"a discontinuity {step:.2f}x a clean tone's largest step"
        assert spread < -45, f"out-of-band energy {spread:.1f} dB"


def test_no_drift_measures_zero_and_an_idle_side_passes_frames_untouched() -> None:
    r = simulate(0.0, 300.0)
    st = r["comp"].stats()
    assert abs(st["drift_ppm"]) < 3 and r["underruns"] == r["card_short"] == 0
    for chunks in (r["played"], r["captured"]):
        step, spread = glitches(chunks)
        assert step < 1.02 and spread < -45
    # a side with no card behind it (WAV, tone: paced by the loop) is off: bit for bit
    comp = DriftCompensator(FS, False, False)
    tone = (AMP * np.sin(2 * np.pi * HZ * np.arange(FS) / RATE)).astype("<i2").tobytes()
    assert comp.playback(tone, 0) == tone and comp.capture_need(0) == FS
    assert comp.capture(tone) == (tone, FS) and comp.capture(tone[:100]) == (
        tone[:100] + bytes(2 * FS - 100), 50)
    assert comp.stats()["drift_ppm"] == 0.0
