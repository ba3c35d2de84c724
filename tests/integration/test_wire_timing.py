"""The wire never waits for processing: with the speex canceller on and a capture processor
that costs 8 ms on every other frame, the stream's packets still reach a loopback receiver on
the 20 ms grid (kernel arrival timestamps, SO_TIMESTAMPNS), every one of them, with the tone
they carry intact (FFT), and the loop's own figures in ``stats()`` say what it measured — on
the loop-paced path (a tone cycled by the loop) and on the card loop (alsa-lib's jack plugin on
jackd's dummy driver: the card's periods wake the loop, the packets keep the card clock's pace).

The slow processor is a test double for the *processor* (compiled here from
``slow_processor.pyx``); the loop, its sockets and the speex canceller are the real ones. The
bound is generous for a shared 2-core machine; the precise figures are the loop benchmark's."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

from firmware import _rtpcore as core
from firmware.core import _aec

from ..audio import pcm_array, peak_hz, tone_snr_db
from ..wire_grid import (
    TONE_HZ,
    build_slow_processor,
    grid_errors,
    load_slow_processor,
    stream_to_receiver,
)
from .test_card_loop import BOX_PRIORITY, MIC_HZ, card  # noqa: F401 (the card fixture)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slow_processor(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    """The SlowProcessor class, built against this checkout's ``_processor.pxd``."""
    if importlib.util.find_spec("Cython") is None:
        pytest.fail("building the slow processor test double needs Cython (pip install "
                    "'.[test]')")
    return load_slow_processor(build_slow_processor(tmp_path_factory.mktemp("slow_processor")))


def test_packets_leave_on_the_grid_while_processing_costs_8_ms(slow_processor: Any) -> None:
    speex = _aec.create("speex")
    assert speex is not None and speex.name == "speex"
    proc = slow_processor(speex, 8.0, 2)  # 8 ms on every other frame: 0, 8, 0, 8 ms ...
    got, st = stream_to_receiver(proc, 4.0)
    rtp = [(t, core.rtp_parse(d)) for t, d in got]
    p50, p90 = grid_errors(rtp)
    assert {(b[3] - a[3]) % 2**32 for (_, a), (_, b) in zip(rtp, rtp[1:], strict=False)} \
        == {160}
    assert len(rtp) >= 190, len(rtp)
    # without the split every other interval is 28 or 12 ms: an error of 8,000 µs
    assert p90 < 2000, f"send-interval error p50 {p50:.0f} µs, p90 {p90:.0f} µs, stats {st}"
    # the audio: the tone, whole, through speex and the burn
    pcm = pcm_array(b"".join(core.decode_ulaw(p[5]) for _, p in rtp[25:]))
    assert abs(peak_hz(pcm) - TONE_HZ) < 5
    assert tone_snr_db(pcm, TONE_HZ) > 25, tone_snr_db(pcm, TONE_HZ)
    # what the loop says of itself: it saw the cost, worked ahead of the deadline by more than
    # it, and its packets reached sendto on time
    assert proc.burned >= 100 and speex.frames == proc.frames
    assert st["work_max_us"] >= 8000 and st["work_p99_us"] >= 8000, st
    assert 8000 < st["lead_us"] <= 15000, st
    assert st["send_lag_p99_us"] < 4000, st  # without the split: >= 8000 (the work before it)
    assert st["sent"] >= len(got), st


def test_on_the_card_loop_packets_keep_the_cards_pace_while_processing_costs_8_ms(
        card: Any, slow_processor: Any) -> None:  # noqa: F811 (the imported fixture)
    """The card loop (woken by the card's periods: alsa-lib's jack plugin on jackd's dummy
    driver): the same 0/8 ms processing between a period's arrival and its packet. The packets
    leave on the card clock plus the lead, not when each is ready."""
    from firmware.core._card import Card as AlsaCard

    speex = _aec.create("speex")
    proc = slow_processor(speex, 8.0, 2)
    alsa = AlsaCard("boxcard", "boxcard")
    try:
        got, st = stream_to_receiver(proc, 4.0, alsa, BOX_PRIORITY)
    finally:
        alsa.close()
    rtp = [(t, core.rtp_parse(d)) for t, d in got if d[1] & 0x7F == 0]
    p50, p90 = grid_errors(rtp)
    assert len(rtp) >= 190, len(rtp)
    # jackd's dummy driver stalls now and then on a loaded machine (the from-nothing run, with
    # the image's base root building beside it, saw one period come past the loop's 5 ms grace):
    # a silent tick is the stand-in card's, counted, and the packet still leaves on time
    assert st["card"] == "ok" and st["silent_ticks"] <= 2 and st["audio_xruns"] == 0, st
    # sent when ready, every other interval is 28 or 12 ms: an error of 8,000 µs
    assert p90 < 2000, f"send-interval error p50 {p50:.0f} µs, p90 {p90:.0f} µs, stats {st}"
    # the room's microphone, through speex and the burn
    pcm = pcm_array(b"".join(core.decode_ulaw(p[5]) for _, p in rtp[25:]))
    assert abs(peak_hz(pcm) - MIC_HZ) < 10 and tone_snr_db(pcm, MIC_HZ) > 10
    assert proc.burned >= 100, proc.burned
    assert st["work_p99_us"] >= 8000 and 8000 < st["lead_us"] <= 15000, st
    # the send lag is now the card clock's time + the lead -> sendto; the clock locked (a
    # stalled jackd cycle under load takes it afresh: counted)
    assert st["send_lag_p99_us"] < 4000 and st["clock_relocks"] >= 1, st
    assert st["card_jitter_p99_us"] < 2000, st


def test_the_lead_follows_the_cost_back_down(slow_processor: Any) -> None:
    """8 ms for the first second, then speex alone: the loop stops working 10 ms ahead (the
    lead is bounded by what it measures, not kept at its worst), and the packets stay whole."""
    speex = _aec.create("speex")
    proc = slow_processor(speex, 8.0, 1, 50)
    got, st = stream_to_receiver(proc, 4.0)
    assert proc.burned == 50 and proc.frames >= 190
    assert st["work_max_us"] >= 8000, st
    # speex alone costs ~0.05 ms here; a VM hiccup in the last 1.3 s may hold the lead up a
    # little, never near the 10 ms the burn needed
    assert st["lead_us"] < 3000, st
    pcm = pcm_array(b"".join(core.decode_ulaw(core.rtp_parse(d)[5]) for _, d in got[60:]))
    assert abs(peak_hz(pcm) - TONE_HZ) < 5 and tone_snr_db(pcm, TONE_HZ) > 25
