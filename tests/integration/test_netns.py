"""Media between two network namespaces joined by a veth pair (real kernel routing, addresses
that exist only inside the namespaces this test creates), optionally impaired by tc netem."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devtools.paths import REPO

from ..audio import frame_rms, peak_hz, wav_array

pytestmark = pytest.mark.integration
A_IP, B_IP = "10.77.0.1", "10.77.0.2"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str]]:
    tag = uuid.uuid4().hex[:6]
    ns_a, ns_b, dev = f"ica-{tag}", f"icb-{tag}", f"vic{tag}"
    try:
        sh("ip", "netns", "add", ns_a)
        sh("ip", "netns", "add", ns_b)
        sh("ip", "link", "add", f"{dev}a", "netns", ns_a, "type", "veth", "peer", "name",
           f"{dev}b", "netns", ns_b)
        for ns, d, ip in ((ns_a, f"{dev}a", A_IP), (ns_b, f"{dev}b", B_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", d)
            sh("ip", "-n", ns, "link", "set", d, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.fail(f"cannot build the test namespaces: {getattr(exc, 'stderr', exc)}")
    yield ns_a, ns_b, dev
    sh("ip", "netns", "del", ns_a, check=False)
    sh("ip", "netns", "del", ns_b, check=False)


def netem_available(ns: str, dev: str) -> bool:
    r = sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem",
           "delay", "1ms", check=False)
    if r.returncode == 0:
        sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)
    return r.returncode == 0


def run_peers(ns_a: str, ns_b: str, tmp: Path, seconds: float = 6.0) -> list[dict]:
    procs = []
    for ns, ip, other, hz, name in ((ns_a, A_IP, B_IP, 700, "a"), (ns_b, B_IP, A_IP, 1300, "b")):
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "devtools.rtp_peer", ip, "40000",
             other, "40000", str(hz), str(seconds), str(tmp / f"{name}.wav")],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=seconds + 30)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    return results


def check_audio(tmp: Path, max_silent: float) -> None:
    for name, hz in (("a", 1300), ("b", 700)):
        x, rate = wav_array(tmp / f"{name}.wav")
        x = x[rate:]
        assert abs(peak_hz(x, rate) - hz) < 10, f"{name} heard the other side's tone"
        silent = float(np.mean(frame_rms(x) < 100))
        assert silent <= max_silent, f"{name}: {silent:.1%} of frames silent"


def test_tones_between_namespaces(namespaces, tmp_path: Path) -> None:
    ns_a, ns_b, _ = namespaces
    stats_a, stats_b = run_peers(ns_a, ns_b, tmp_path)
    check_audio(tmp_path, 0.0)
    assert stats_a["lost"] == 0 and stats_b["lost"] == 0
    assert stats_a["received"] > 250 and stats_b["received"] > 250


def test_netem_loss_and_delay_keep_playout_continuous(namespaces, tmp_path: Path) -> None:
    ns_a, ns_b, dev = namespaces
    if not netem_available(ns_a, f"{dev}a"):
        pytest.skip("this kernel has no sch_netem; test_media.py covers loss and jitter with a "
                    "user-space relay")
    for ns, d in ((ns_a, f"{dev}a"), (ns_b, f"{dev}b")):
        sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", d, "root", "netem",
           "loss", "5%", "delay", "20ms", "10ms")
    stats_a, stats_b = run_peers(ns_a, ns_b, tmp_path)
    check_audio(tmp_path, 0.02)
    for st in (stats_a, stats_b):
        assert st["lost"] > 0 and st["concealed_ms"] > 0
