"""Call-progress tones (firmware/media/tones.py) judged by their content: the cadence's
frequencies by FFT from a real paced player, the cached frames against the sine formula, and
no player thread for a sink that keeps nothing."""

from __future__ import annotations

import math
import threading
import time

import pytest

from tests import compiled

pytest.importorskip("firmware._rtpcore", reason=compiled.REASON)
pytest.importorskip("numpy", reason=compiled.EXTRAS_REASON)
import numpy as np

from firmware.media import tones
from firmware.media.audio import NullSink
from firmware.media.tones import TonePlayer

from ..audio import Recorder, pcm_array, peak_hz

pytestmark = pytest.mark.compiled


def _direct(freqs: tuple[float, ...], start: int) -> np.ndarray:
    scale = 0.25 * 32767 / len(freqs)
    k = np.arange(start, start + tones.FRAME)
    return np.trunc(scale * sum(np.sin(2 * math.pi * f * k / 8000) for f in freqs))


def test_cached_frames_are_the_sine_formula_far_into_the_ring() -> None:
    """Frames come from one second computed once, reused; an hour in, they are still the
    formula's samples (within 1 LSB of float rounding of the larger argument)."""
    for freqs in ((400.0, 450.0), (425.0,), (437.5,)):
        for start in (0, 160, 7840, 8000, 8000 * 3600 + 4960):
            got = pcm_array(tones._frame(freqs, start))
            assert np.abs(got - _direct(freqs, start)).max() <= 1, (freqs, start)
    assert tones._frame((425.0,), 8000 * 7 + 320) is tones._frame((425.0,), 320), "reused"


def test_ringback_and_ring_tones_by_fft() -> None:
    for kind, want in (("ringback", (425,)), ("ring", (400, 450))):
        rec = Recorder()
        player = TonePlayer(rec, kind)  # type: ignore[arg-type]  # a sink by protocol
        player.start()
        time.sleep(0.35)
        player.stop()
        x = pcm_array(bytes(rec.pcm))
        assert len(x) >= 0.3 * 8000 and np.abs(x).max() > 4000, kind
        power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / 8000)
        near = np.zeros(len(freqs), dtype=bool)
        for w in want:
            band = np.abs(freqs - w) < 25
            near |= band
            assert power[band].max() > 0.5 * power.max(), (kind, w)
        assert any(abs(peak_hz(x) - w) < 10 for w in want), kind
        assert power[near].sum() > 0.95 * power.sum(), f"{kind}: energy outside the cadence"


def test_a_null_sink_gets_no_player_thread() -> None:
    player = TonePlayer(NullSink(), "ring")
    player.start()
    assert not [t for t in threading.enumerate() if t.name.startswith("tone-")]
    player.stop()  # and stopping it is fine
