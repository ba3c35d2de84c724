"""Clock drift between the sound card and the 20 ms loop, an hour of call on a virtual clock.

A simulated card (``devtools.drift_sim``) runs ``ppm`` off the loop: it drains the real
playback ``PcmFifo`` and fills the real capture ``PcmFifo`` one 20 ms period (of its own clock)
at a time, while the loop side goes through ``firmware.core._drift.DriftCompensator`` exactly as the
media thread does. The FIFOs must stay bounded, the drift estimate must find the card's rate,
and a 1013 Hz tone (not a multiple of 50 Hz, so a dropped or repeated sample would show) must
come through without a discontinuity or spectral spread beyond a clean tone's.
"""

from __future__ import annotations

import pytest

from tests import compiled

pytest.importorskip("firmware.core._drift", reason=compiled.REASON)
pytest.importorskip("numpy", reason=compiled.EXTRAS_REASON)
import numpy as np

from devtools.drift_sim import AMP, FS, HZ, RATE, glitches, simulate
from firmware.core._drift import DriftCompensator

pytestmark = pytest.mark.compiled


@pytest.mark.parametrize("ppm", [200.0, -200.0])
@pytest.mark.parametrize("seconds", [600.0, pytest.param(3600.0, marks=pytest.mark.slow)])
def test_200_ppm_stays_bounded_without_a_glitch(ppm: float, seconds: float) -> None:
    """Ten minutes in ./build.sh test (the FIFO levels peak within the first minutes), the
    hour in ./build.sh slow."""
    r = simulate(ppm, seconds)
    assert len(r["played"]) > seconds * 49.7  # 50 card periods a second
    comp = r["comp"]
    # bounded: without compensation ten minutes at 200 ppm are 960 samples (120 ms) of slip,
    # an hour 5760 (0.72 s)
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


def test_a_backlog_left_at_the_start_is_walked_out_without_a_glitch() -> None:
    """What the start of a call left queued for the speaker (here 60 ms) is latency: the
    control's target walks down to its floor and the resampler removes it, inaudibly."""
    r = simulate(200.0, 150.0, backlog=480)
    levels = np.array(r["play_levels"])
    first, last = levels[50:550].mean(), levels[-3000:].mean()  # 1-11 s, the last minute
    assert first > 550 and last < first - 250, (first, last)
    assert r["underruns"] == 0 and r["card_short"] == 0
    step, spread = glitches(r["played"])
    assert step < 1.02 and spread < -45
