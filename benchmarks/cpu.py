"""CPU per call-minute and wake-ups per second: the intercom against baresip, each making the
same call (G.711 to Asterisk's Echo() at extension 600) on this machine, measured from /proc."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from devtools.components import Asterisk, Baresip, Intercom, wait_for

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def _window(pid: int, seconds: float) -> tuple[float, float]:
    cpu0, sw0, t0 = _cpu_seconds(pid), _switches(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, sw1, t1 = _cpu_seconds(pid), _switches(pid), time.monotonic()
    return (cpu1 - cpu0) * 60 / (t1 - t0), (sw1 - sw0) / (t1 - t0)


def run(seconds: float) -> list[dict]:
    rows = []
    pbx = Asterisk().start()
    tmp = Path(tempfile.mkdtemp(prefix="intercom-bench-"))
    try:
        box = Intercom(tmp / "box", pbx.port, audio={"capture": "tone:700",
                                                      "playback": "null"})
        box.start()
        wait_for(lambda: box.status().get("state") == "idle", 15, 0.1, "registration")
        idle_cpu, idle_wakeups = _window(box.proc.pid, min(seconds, 10))
        assert box.cmd("call", "600")["ok"]
        wait_for(lambda: box.status().get("state") == "in_call", 15, 0.1, "the echo call")
        time.sleep(1)
        cpu, wakeups = _window(box.proc.pid, seconds)
        rtp = box.status()["rtp"]
        rss = _rss_mb(box.proc.pid)
        box.cmd("hangup")
        box.stop()
        rows.append({"client": "intercom (this firmware)", "cpu_s_per_min": cpu,
                     "wakeups_per_s": wakeups, "peak_rss_mb": rss,
                     "idle_cpu_pct": idle_cpu / 60 * 100, "idle_wakeups_per_s": idle_wakeups,
                     "received": rtp["received"]})
        phone = Baresip(pbx, "5001", tone_hz=700, tmp=tmp / "baresip").start()
        phone.command("dial", f"sip:600@127.0.0.1:{pbx.port}")
        phone.wait_event("CALL_ESTABLISHED", 15)
        time.sleep(1)
        assert phone.proc is not None
        cpu, wakeups = _window(phone.proc.pid, seconds)
        rows.append({"client": "baresip 1.0.0 (reference)", "cpu_s_per_min": cpu,
                     "wakeups_per_s": wakeups, "peak_rss_mb": _rss_mb(phone.proc.pid),
                     "idle_cpu_pct": None, "idle_wakeups_per_s": None, "received": None})
        phone.command("hangup")
        phone.stop()
    finally:
        pbx.cleanup()
    return rows


def table(rows: list[dict]) -> str:
    ref = rows[-1]["cpu_s_per_min"]
    out = ["| client | CPU s per call-minute | vs baresip | wake-ups/s in call (process) "
           "| of which the call | peak RSS MB |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        per_call = r["wakeups_per_s"] - (r["idle_wakeups_per_s"] or 0)
        out.append(f"| {r['client']} | {r['cpu_s_per_min']:.2f} | "
                   f"{r['cpu_s_per_min'] / ref:.2f}x | {r['wakeups_per_s']:.0f} | "
                   f"{per_call:.0f} | {r['peak_rss_mb']:.1f} |")
    ours = rows[0]
    out.append(f"\nIntercom idle and registered: {ours['idle_cpu_pct']:.2f} % of a core, "
               f"{ours['idle_wakeups_per_s']:.1f} wake-ups/s.")
    return "\n".join(out)
