"""20 ms loop accuracy measured at a receiver from kernel arrival timestamps on loopback.

For each sender (benchmarks.senders) and each condition (idle; two busy-loop processes loading
both cores), a plain UDP receiver records SO_TIMESTAMPNS arrival times and RTP headers, and
reports the send-interval error (p50/p99/max), the drift against an ideal 20 ms clock, the
packet rate and the RTP timestamp steps. The core runs bare and with each echo canceller built
(speex: the default configuration), with and without real-time priority; its rows also carry
what the loop measured of itself and its thread's CPU and wake-ups.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time

from firmware.core import _aec

SO_TIMESTAMPNS = 35  # Linux, x86 and arm64 alike; SCM_TIMESTAMPNS has the same value
PTIME_NS = 20_000_000


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def measure(kind: str, seconds: float, load: bool, rt: int = 0, spin_us: int = 0,
            aec: str = "off") -> dict:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2.0)
    hogs = busy_loops(2) if load else []
    sender = subprocess.Popen([sys.executable, "-m", "benchmarks.senders", kind,
                               str(rx.getsockname()[1]), str(seconds + 1.0), str(rt)],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "BENCH_SPIN_US": str(spin_us),
                                   "BENCH_AEC": aec})
    arrivals: list[int] = []
    stamps: list[int] = []
    try:
        deadline = None
        while True:
            try:
                data, anc, _, _ = rx.recvmsg(2048, 64)
            except TimeoutError:
                break
            t = None
            for level, typ, payload in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    t = sec * 1_000_000_000 + nsec
            if t is None:
                t = time.time_ns()
            if deadline is None:
                deadline = t + int(seconds * 1e9)
            if t > deadline:
                break
            arrivals.append(t)
            stamps.append(struct.unpack_from("!I", data, 4)[0])
    finally:
        out, _ = sender.communicate(timeout=30)
        for h in hogs:
            h.kill()
            h.wait()
        rx.close()
    intervals = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    errors = sorted(abs(i - PTIME_NS) / 1000 for i in intervals)
    span = arrivals[-1] - arrivals[0]
    drift_ms = (span - (len(arrivals) - 1) * PTIME_NS) / 1e6
    steps = sorted({(b - a) % 2**32 for a, b in zip(stamps, stamps[1:], strict=False)})
    out = out.strip()
    loop_figures = json.loads(out) if out.startswith("{") else {"scheduling": out}
    return {
        "sender": kind + (" +RT" if rt else "") + (f" +spin {spin_us} µs" if spin_us else "")
        + (f" +{aec}" if aec != "off" else ""),
        "load": "2 busy cores" if load else "idle",
        "packets": len(arrivals),
        "p50_us": statistics.median(errors), "p99_us": errors[int(0.99 * (len(errors) - 1))],
        "max_us": errors[-1], "drift_ms_per_10min": drift_ms * 600e9 / span,
        "pps": (len(arrivals) - 1) / (span / 1e9), "ts_steps": steps,
        **loop_figures,
        "scheduling": loop_figures.get("scheduling") or ("realtime" if rt else "normal"),
    }


def senders() -> list[tuple[str, int, int, str]]:
    """(kind, RT priority, spin µs, echo canceller) of each row: the loop bare, with real-time
    priority and spin, then with each echo canceller this build has (speex is the default
    configuration), with and without real-time priority; then the references."""
    rows = [("core", 0, 0, "off"), ("core", 50, 0, "off"), ("core", 50, 300, "off")]
    for aec in ("speex", "webrtc"):
        if _aec.unavailable(aec) is None:
            rows += [("core", 0, 0, aec), ("core", 50, 0, aec)]
    return rows + [("asyncio", 0, 0, "off"), ("pyvoip", 0, 0, "off")]


def run(seconds: float) -> list[dict]:
    rows = []
    for load in (False, True):
        for kind, rt, spin, aec in senders():
            rows.append(measure(kind, seconds, load, rt, spin, aec))
    return rows


def _figure(r: dict, key: str) -> str:
    return f"{r[key]:.0f}" if key in r else "–"


def table(rows: list[dict]) -> str:
    """The wire (kernel arrival timestamps at the receiver) first; then, for the core, what the
    loop measured of itself (its send lag at sendto, the lead it works ahead of the deadline
    by: 0 = one wake-up per period) and what its thread cost (CPU, wake-ups)."""
    out = ["| sender | load | packets | p50 µs | p99 µs | max µs | drift ms/10 min | packets/s "
           "| ts step | p99 vs pyVoIP-style | loop: send lag p99 µs | lead µs | CPU ms/min "
           "| wake-ups/s |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    ref = {r["load"]: r["p99_us"] for r in rows if r["sender"] == "pyvoip"}
    for r in rows:
        ratio = ref[r["load"]] / r["p99_us"] if r["p99_us"] else float("inf")
        steps = ",".join(str(s) for s in r["ts_steps"][:3])
        out.append(f"| {r['sender']} | {r['load']} | {r['packets']} | {r['p50_us']:.0f} | "
                   f"{r['p99_us']:.0f} | {r['max_us']:.0f} | {r['drift_ms_per_10min']:+.1f} | "
                   f"{r['pps']:.3f} | {steps} | {ratio:.1f}x better | "
                   f"{_figure(r, 'send_lag_p99_us')} | {_figure(r, 'lead_us')} | "
                   f"{_figure(r, 'loop_cpu_ms_per_min')} | {_figure(r, 'loop_wakeups_per_s')} |")
    return "\n".join(out)
