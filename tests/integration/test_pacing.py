"""Kernel pacing on this host's kernel (which has no ``fq``): the box asks rtnetlink for the
way out to its peer and finds what ``tc`` finds — loopback's ``noqueue``, a veth's multi-queue
root in a namespace this test makes, a plain ``pfifo`` — none of which holds a stamped packet,
so the loop paces; a call's status says so. The stamped send itself works here (the kernel takes
every ``SCM_TXTIME``), and shows why the decision matters: on noqueue a packet stamped with its
time leaves when it is handed over. That fq does hold it, with one wake-up a period, is
``tests/kernel/test_kernel_pacing.py`` (Debian's kernel in a guest)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from firmware import _rtpcore as core
from firmware.core import _aec
from firmware.media.pacing import egress

from .. import wire_grid
from ..audio import pcm_array, peak_hz, tone_snr_db
from .test_netns import B_IP, namespaces  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration


def sh(*args: str) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True)
    assert r.returncode == 0, f"{args}: {r.stderr}"
    return r.stdout


def root_kind(tc_listing: str) -> str:
    """The root qdisc's kind as ``tc qdisc show`` prints it."""
    return next(line.split()[1] for line in tc_listing.splitlines() if " root" in line)


def egress_in(ns: str, address: str) -> dict[str, Any] | None:
    code = ("import dataclasses, json, sys; from firmware.media.pacing import egress; "
            "e = egress(sys.argv[1]); print(json.dumps(e and dataclasses.asdict(e)))")
    out = sh("ip", "netns", "exec", ns, sys.executable, "-c", code, address)
    return json.loads(out)  # type: ignore[no-any-return]


def test_loopback_is_noqueue_here_so_the_loop_paces() -> None:
    way = egress("127.0.0.1")
    assert way is not None and way.device == "lo", way
    assert way.qdisc == root_kind(sh("tc", "qdisc", "show", "dev", "lo")) == "noqueue"
    assert not way.kernel_paces


def test_the_way_out_is_the_routes_interface_and_its_root_as_tc_shows_it(
        namespaces: tuple[str, str, str]) -> None:  # noqa: F811 (the imported fixture)
    ns, _, pair = namespaces
    dev = f"{pair}a"
    listing = sh("ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", dev)
    kind = root_kind(listing)
    way = egress_in(ns, B_IP)
    assert way is not None and way["device"] == dev, (way, listing)
    if kind == "mq":  # a veth is multi-queue: mq with a default qdisc under each queue
        under = sorted({line.split()[1] for line in listing.splitlines() if " parent " in line})
        kind = "mq(" + ",".join(under) + ")"
    assert way["qdisc"] == kind, (way, listing)
    assert way["kernel_paces"] is False
    sh("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "pfifo")
    assert egress_in(ns, B_IP) == {"device": dev, "qdisc": "pfifo", "kernel_paces": False}
    # no route (the namespace has no default route): the kernel says so, the loop paces
    assert egress_in(ns, "192.0.2.9") is None
    assert egress("not an address") is None


def test_a_calls_status_says_who_paces(tmp_path: Path) -> None:
    from firmware.events import MediaParams
    from firmware.media.audio import NullSink, ToneSource
    from firmware.media.stream import RtpPorts, RtpSession

    ports = RtpPorts("127.0.0.1")
    session = RtpSession(ports, ToneSource(440), NullSink())
    try:
        session.start(MediaParams("127.0.0.1", 9, 0, "PCMU", 101, 20, "sendrecv"))
        st = session.stats()
    finally:
        session.stop()
        ports.close()
    assert st["pacing"] == "loop" and st["egress"] == "lo (noqueue)", st
    assert st["kernel_pacing"] is False and session.final_stats is not None
    assert session.final_stats["pacing"] == "loop"


def test_stamped_packets_leave_when_handed_over_where_no_qdisc_holds_them(
        tmp_path: Path) -> None:
    """The stamped send on this kernel: every packet taken (no send error), the tone whole —
    and on noqueue each leaves when it is ready, not at its stamp: the 0/8 ms work shows on the
    wire (the loop-paced send keeps it off: ``test_wire_timing``)."""
    slow = wire_grid.load_slow_processor(wire_grid.build_slow_processor(tmp_path))
    proc = slow(_aec.create("speex"), 8.0, 2)
    got, st = wire_grid.stream_to_receiver(proc, 3.0, kernel_pacing=True)
    rtp = [(t, core.rtp_parse(d)) for t, d in got if d[1] & 0x7F == 0]
    p50, _ = wire_grid.grid_errors(rtp)
    assert st["kernel_pacing"] is True and st["send_errors"] == 0, st
    assert len(rtp) >= 140 and st["sent"] >= len(rtp), (len(rtp), st)
    pcm = pcm_array(b"".join(core.decode_ulaw(p[5]) for _, p in rtp[25:]))
    assert abs(peak_hz(pcm) - wire_grid.TONE_HZ) < 5 and tone_snr_db(pcm, wire_grid.TONE_HZ) > 25
    # handed over ahead (one wake-up a period: the lead covers the work), left at once
    assert 8000 < st["lead_us"] <= 15000 and st["send_lag_p99_us"] < 1000, st
    assert p50 > 6000, f"on noqueue the work's 8 ms should reach the wire: p50 {p50:.0f} µs"
