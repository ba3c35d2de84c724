"""Kernel pacing on a kernel that has ``fq`` (Debian's, in the x86 guest ``devtools/kguest.py``
boots under TCG; this host's kernel has no fq): the box's media loop hands each RTP packet to
the kernel as soon as it is ready, stamped with its time (SO_TXTIME), and fq sends it then — the
packets on the 20 ms grid with ONE wake-up of the loop thread a period, where the loop pacing
itself needs two for the same grid. One boot runs ``pacing_guest.py`` (the scenarios, in order:
noqueue, then ``tc qdisc replace dev lo root fq``); the tests judge what it wrote.

The work is the slow-processor test double (speex + 8 ms on every other frame, as a slower
board's canceller would cost), so a packet sent when ready would be 8 ms off the grid. What
TCG does not give is precision: its timers fire late by a few hundred µs, so the grid bound
here (p90 < 2 ms, against 8 ms without pacing) asks for the mechanism, not for the ≤ 100 µs a
real board is measured against (README, Benchmarks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from devtools import kguest
from devtools.paths import REPO

from ..integration.test_card_loop import MIC_HZ
from ..wire_grid import TONE_HZ, build_slow_processor

GRID_US = 2000.0  # p90 of |interval - 20 ms|: the 0/8 ms work unpaced puts 8,000 there


@pytest.fixture(scope="module")
def seen(guest: kguest.Guest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    share = tmp_path_factory.mktemp("kernel_pacing")
    slow = build_slow_processor(share)  # on the host: the guest runs the host's binaries
    out = share / "seen.json"
    rc, console = kguest.run(
        guest, f"cd {REPO} && {sys.executable} -m tests.kernel.pacing_guest {slow} {out}",
        timeout=600, share=share)
    assert rc == 0 and out.exists(), console[-4000:]
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def audio_whole(run: dict[str, Any], hz: float = TONE_HZ, snr_db: float = 25) -> None:
    assert run["packets"] >= 190 and run["send_errors"] == 0, run
    assert abs(run["peak_hz"] - hz) < 5 and run["snr_db"] > snr_db, run


def test_the_box_finds_fq_on_its_way_out_and_nothing_else(seen: dict[str, Any]) -> None:
    assert "Debian" in seen["kernel"] and Path("/proc/version").read_text() != seen["kernel"]
    assert seen["egress_before"] == {"device": "lo", "qdisc": "noqueue", "kernel_paces": False}
    assert seen["tc"] == [0, ""], seen["tc"]
    assert seen["egress_fq"] == {"device": "lo", "qdisc": "fq", "kernel_paces": True}


def test_on_fq_stamped_packets_keep_the_grid_with_one_wakeup_a_period(
        seen: dict[str, Any]) -> None:
    run = seen["stamped_on_fq"]
    audio_whole(run)
    assert run["kernel_pacing"] is True and run["burned"] >= 90, run
    # handed over ahead of their times by more than the work (the lead), in the one wake-up
    assert 8000 < run["lead_us"] <= 15000 and run["late_sends"] <= 10, run  # TCG: some late
    assert run["grid_p90_us"] < GRID_US, run
    assert run["wakeups_per_s"] < 60, run  # 50 a second: one per period


def test_the_same_stamps_on_noqueue_leave_at_once(seen: dict[str, Any]) -> None:
    """The negative control, in the same boot: without fq the stamps do nothing — the work's
    8 ms reaches the wire. It is fq that holds the packets, not the loop."""
    run = seen["stamped_on_noqueue"]
    audio_whole(run)
    assert run["kernel_pacing"] is True and run["wakeups_per_s"] < 60, run
    assert run["grid_p50_us"] > 6000, run


def test_the_loop_pacing_itself_needs_a_second_wakeup_for_the_same_grid(
        seen: dict[str, Any]) -> None:
    run = seen["loop_paced_on_fq"]
    audio_whole(run)
    assert run["kernel_pacing"] is False and run["grid_p90_us"] < GRID_US, run
    assert run["wakeups_per_s"] > 85, run  # wake to work, wake again to send


def test_a_calls_media_chooses_kernel_pacing_by_itself(seen: dict[str, Any]) -> None:
    """``RtpSession`` as the application starts it (speex on, the default): it looks at the
    way out to the peer, finds fq, and paces through the kernel."""
    run = seen["session_on_fq"]
    audio_whole(run)
    assert run["pacing"] == "kernel" and run["egress"] == "lo (fq)", run
    assert run["kernel_pacing"] is True and run["lead_us"] >= 1000, run
    assert run["grid_p90_us"] < GRID_US and run["wakeups_per_s"] < 60, run


def test_the_card_loop_keeps_the_card_clocks_grid_through_the_kernel(
        seen: dict[str, Any]) -> None:
    """The card loop (jackd's dummy driver and alsa-lib's jack plugin, inside the guest; speex
    on): woken once by each period, the packet stamped with the card clock's time + the lead;
    the loop-paced card path needs its second wake-up for the same."""
    stamped, paced = seen["card_stamped_on_fq"], seen["card_loop_paced_on_fq"]
    for run in (stamped, paced):
        audio_whole(run, MIC_HZ, 10)  # the room's microphone, through speex
        # the card kept (an xrun of jackd's dummy driver under TCG on a loaded host is
        # recovered and counted: seen once, in the from-nothing run beside the image build)
        assert run["card"] == "ok" and run["audio_xruns"] <= 2, run
        # jackd's dummy driver under TCG wakes late now and then (the card clock is taken
        # afresh: a step on the wire); the median is the loop's, the tail the emulation's
        assert run["grid_p50_us"] < GRID_US / 4, run
    assert stamped["kernel_pacing"] is True and stamped["lead_us"] >= 1000, stamped
    assert stamped["wakeups_per_s"] < 60, stamped
    assert paced["kernel_pacing"] is False and paced["wakeups_per_s"] > 85, paced
