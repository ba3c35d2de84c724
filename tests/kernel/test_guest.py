"""Debian's kernel in the test guest paces datagrams by their departure time: the mechanism the
box's one-wake-up-a-period RTP sending builds on (SO_TXTIME + SCM_TXTIME on CLOCK_MONOTONIC, the
``fq`` qdisc holding each datagram until its time), which the build machine's own kernel
cannot show (no sch_fq).

One boot for the whole module (TCG boots cost): the guest runs tests/kernel/guest_txtime.py with
this session's python on the host's root and writes what it saw into the test's folder; the
tests below judge it. On lo's ``noqueue`` a datagram handed over 40 ms early arrives at once; on
``fq`` none arrives before its time (the kernel's receive timestamp).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devtools import kguest

from .conftest import TIMINGS

pytestmark = pytest.mark.kernel

SCRIPT = Path(__file__).with_name("guest_txtime.py")
BUDGET = 300.0  # seconds for boot + python + the probe under TCG on a loaded 2-core machine


@pytest.fixture(scope="module")
def seen(guest: kguest.Guest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    share = tmp_path_factory.mktemp("kguest")
    out = share / "txtime.json"
    started = time.monotonic()
    rc, console = kguest.run(guest, f"{shlex.quote(sys.executable)} {shlex.quote(str(SCRIPT))} "
                             f"{shlex.quote(str(out))}", BUDGET, share)
    wall = time.monotonic() - started
    assert rc == 0 and out.exists(), console[-4000:]
    result = json.loads(out.read_text())
    ready = float(re.findall(r"^KGUEST-READY (\S+)$", console, re.M)[0])
    TIMINGS.append(f"kernel guest: one boot + the probe {wall:.1f} s wall; guest uptime "
                   f"{ready:.1f} s at its shell, python started in "
                   f"{result['uptime_at_start'] - ready:.1f} s")
    for qdisc in ("noqueue", "fq"):
        offs = [p["kernel_minus_due_us"] for p in result[qdisc]["packets"] if not p["lost"]]
        TIMINGS.append(f"kernel guest: arrival - due on {qdisc}, kernel timestamp (us): "
                       + " ".join(f"{o:.0f}" for o in offs))
    return result


def _arrivals(seen: dict[str, Any], qdisc: str) -> list[float]:
    """Kernel receive time - due (µs) of each datagram; every one must have arrived, stamped."""
    packets = seen[qdisc]["packets"]
    assert packets and not any(p["lost"] for p in packets), packets
    assert all(p["echo"] == [p["i"], p["due"]] for p in packets), packets
    assert all(p["kernel_minus_due_us"] is not None for p in packets), packets
    return [p["kernel_minus_due_us"] for p in packets]


def test_the_guest_runs_debians_kernel(guest: kguest.Guest, seen: dict[str, Any]) -> None:
    assert seen["release"] == guest.release != os.uname().release, seen["proc_version"]
    assert "Debian" in seen["proc_version"], seen["proc_version"]
    assert {"sch_fq", "sch_etf"} <= set(seen["modules"]), seen["modules"]


def test_fq_becomes_lo_root_qdisc(seen: dict[str, Any]) -> None:
    assert "noqueue" in seen["noqueue"]["qdisc"]["out"], seen["noqueue"]["qdisc"]
    assert seen["fq"]["replace"]["rc"] == 0, seen["fq"]["replace"]
    assert seen["fq"]["qdisc"]["out"].startswith("qdisc fq "), seen["fq"]["qdisc"]


def test_noqueue_sends_a_txtime_datagram_at_once(seen: dict[str, Any]) -> None:
    arrivals = _arrivals(seen, "noqueue")
    assert max(arrivals) <= -30_000, arrivals  # at least 30 of its 40 ms early


def test_fq_holds_a_txtime_datagram_until_its_time(seen: dict[str, Any]) -> None:
    arrivals = _arrivals(seen, "fq")
    assert min(arrivals) >= 0, arrivals
    returned = [p["returned_minus_due_us"] for p in seen["fq"]["packets"]]
    assert min(returned) >= 0, returned  # the reader's own clock agrees
