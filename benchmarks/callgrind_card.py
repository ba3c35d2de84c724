"""Instructions per call-second under callgrind: the box on its ALSA path (echo canceller off,
and speex: the default) against baresip 1.0.0 on the same kind of call, a G.711 call to
Asterisk's Echo() (extension 600), 8 kHz mono in and out.

Machine-independent where wall-clock CPU is not: callgrind counts the instructions each process
executes, whatever else the machine does, so the row predicts a slower core (a Pi's Cortex-A53)
better than this VM's clock. Kernel work (wake-ups, syscalls, the network stack) is not in it:
the wake-ups row of ``--only cpu`` covers that.

Set-up, one process at a time (so each has a core for valgrind's single-threaded emulation):
each starts under ``valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes``,
registers, makes its call; instrumentation is switched on with ``callgrind_control -i on`` for N
seconds of call, dumped and switched off. The box: its production ALSA path on alsa-lib's jack
plugin (devtools/jack_card.py, a paced 8 kHz device); the plugin's libjack threads run inside
the box and are reported apart (a real card has none). baresip: aufile with an 8 kHz mono WAV,
jack at 8000 Hz on its own paced dummy jackd (devtools/baresip.py), its jack module's threads in
its total. Each total is divided by the call-seconds the process actually moved in the window,
from its RTP packets on the wire (a packet socket on ``lo``, 50 packets = 1 s): under callgrind
a process that cannot keep real time sends fewer packets, and the packets/s column shows it.
Knows nothing of the box's internals beyond the function names it sorts threads by.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools import jack_card
from devtools.asterisk import Asterisk
from devtools.baresip import Baresip
from devtools.box.process import Intercom
from devtools.rtp_wire import Wire
from devtools.tones import tone_wav
from devtools.waiting import wait_for

from . import threadroles
from .latency_card import xruns_in

PACKETS_PER_SECOND = 50
_SUMMARY = re.compile(r"^(?:summary|totals): (\d+)", re.M)
_OB = re.compile(r"c?ob=\((\d+)\)(?: (.*))?")


def available() -> str | None:
    """Why this cannot run here, or None."""
    for tool in ("valgrind", "callgrind_control", "baresip", "jackd"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    if not jack_card.available():
        return "alsa-lib's jack plugin (libasound2-plugins) is missing"
    if os.geteuid() != 0:
        return "the packet socket on lo needs root"
    return None


def _valgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
            f"--callgrind-out-file={out}/cg.%p", "--error-limit=no", "-q"]


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, timeout=120,
                   check=True)


def _measure(pid: int, seconds: float) -> tuple[float, float, float]:
    """Instrumentation on for ``seconds`` of call, then dumped and off: (window start, end) on
    the monotonic clock and its length."""
    _control(pid, "-i", "on")
    t0 = time.monotonic()
    time.sleep(seconds)
    t1 = time.monotonic()
    _control(pid, "-d")
    _control(pid, "-i", "off")
    return t0, t1, t1 - t0


def thread_counts(out: Path, pid: int) -> dict[str, int]:
    """{role: instructions} of the first dump of process ``pid``, one file per thread: the
    media loop (its Cython function on the stack), the jack plugin's libjack threads (libjack
    code and no Python interpreter in the file), everything else."""
    counts: dict[str, int] = {}
    for path in sorted(glob.glob(f"{out}/cg.{pid}.1-*")):
        text = Path(path).read_text(errors="replace")
        m = _SUMMARY.search(text)
        if not m:
            continue
        if threadroles.LOOP_CODE.search(text):
            role = "loop"
        elif "libjack" in text and "PyEval" not in text:
            role = "plugin"
        else:
            role = "other"
        counts[role] = counts.get(role, 0) + int(m.group(1))
    return counts


def objects(text: str) -> dict[str, int]:
    """{object file (full path): instructions executed in its own code} of one callgrind
    file: the cost lines under each ``ob=``, less the inclusive cost lines after ``calls=``."""
    names: dict[str, str] = {}
    out: dict[str, int] = {}
    ob, skip = "???", False
    for line in text.splitlines():
        if not line:
            continue
        if line[0].isdigit() or line[0] in "+-*":
            if skip:  # a call's inclusive cost: the callee's own lines count it
                skip = False
                continue
            fields = line.split()
            if len(fields) > 1:
                out[ob] = out.get(ob, 0) + int(fields[1])
        elif line.startswith(("ob=", "cob=")):
            m = _OB.match(line)
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                if line[0] == "o":
                    ob = names.get(m.group(1), "???")
            elif line[0] == "o":
                ob = line[3:]
        elif line.startswith("calls="):
            skip = True
    return out


def group(path: str) -> str:
    """Where an object file's instructions belong in the loop thread's breakdown."""
    name = path.rsplit("/", 1)[-1]
    if "speexdsp" in name or name.startswith("_aec."):
        return ECHO  # the box links speexdsp into _aec (build.sh's -O3 copy): one column
    if name.startswith(("libasound", "libjack")):
        return "alsa-lib + jack plugin"
    if "/firmware/" in path:
        return "box core (Cython)"
    if name.startswith(("libc.", "libm.", "ld-linux")):
        return "libc, libm"
    return "other"


ECHO = "echo canceller (_aec, speexdsp)"
GROUPS = ("box core (Cython)", ECHO, "alsa-lib + jack plugin", "libc, libm", "other")


def loop_objects(out: Path, pid: int) -> dict[str, int]:
    """The media loop thread's instructions by object file (full path), first dump."""
    for path in sorted(glob.glob(f"{out}/cg.{pid}.1-*")):
        text = Path(path).read_text(errors="replace")
        if threadroles.LOOP_CODE.search(text):
            return objects(text)
    return {}


def _packets(wire: Wire, t0: float, t1: float, match: Any) -> int:
    return sum(1 for p in wire.packets if t0 <= p[0] <= t1 and match(p[1], p[2]))


def _box(pbx: Asterisk, tmp: Path, aec: str, seconds: float, env: dict) -> dict[str, Any]:
    out = tmp / f"cg-box-{aec}"
    out.mkdir(parents=True)
    box = Intercom(tmp / f"box-{aec}", pbx.port, log_level="info", env=env,
                   audio={"capture": "icjack", "playback": "icjack", "echo_canceller": aec},
                   prefix=_valgrind(out), start_timeout=180)
    wire = None
    try:
        box.start()
        wait_for(lambda: box.status().get("state") == "idle", 120, 0.5, "registration")
        assert box.cmd("call", "600")["ok"]
        wait_for(lambda: box.status().get("state") == "in_call", 60, 0.5, "the echo call")
        remote = (box.status().get("media") or {}).get("remote_port")
        wire = Wire()
        time.sleep(3)
        assert box.proc is not None
        t0, t1, span = _measure(box.proc.pid, seconds)
        sent = _packets(wire, t0, t1, lambda sport, dport: dport == remote)
        status = box.status()
        rtp = status.get("rtp") or {}
        counts = thread_counts(out, box.proc.pid)
        return {"who": f"intercom, ALSA path, echo canceller {aec}", "counts": counts,
                "loop_objects": loop_objects(out, box.proc.pid),
                "packets": sent, "span": span, "xruns": xruns_in(status),
                "late": rtp.get("late_wakeups")}
    finally:
        if wire is not None:
            wire.close()
        box.stop()


def _baresip(pbx: Asterisk, tmp: Path, seconds: float) -> dict[str, Any]:
    out = tmp / "cg-baresip"
    out.mkdir(parents=True)
    wav = tone_wav(tmp / "tone8k.wav", 700, seconds=seconds + 120, rate=8000)
    phone = Baresip(pbx, "5001", tmp=tmp / "baresip", paced=True, source_wav=wav, rate=8000,
                    channels=1, prefix=tuple(_valgrind(out)))
    wire = None
    try:
        phone.start()
        wire = Wire()
        phone.command("dial", f"sip:600@127.0.0.1:{pbx.port}")
        phone.wait_event("CALL_ESTABLISHED", 60)
        time.sleep(3)
        assert phone.proc is not None
        t0, t1, span = _measure(phone.proc.pid, seconds)
        lo, hi = phone.rtp_ports
        sent = _packets(wire, t0, t1, lambda sport, dport: lo <= sport <= hi)
        counts = thread_counts(out, phone.proc.pid)
        return {"who": "baresip 1.0.0 (aufile 8 kHz WAV, jack on a dummy jackd)",
                "counts": {"other": sum(counts.values())}, "packets": sent, "span": span,
                "xruns": None, "late": None}
    finally:
        if wire is not None:
            wire.close()
        phone.stop()


def run(seconds: float) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="intercom-bench-cg-"))
    pbx = Asterisk().start()
    jackd, env = jack_card.start(tmp, "icjack", "system:playback_1", "system:capture_1", 160)
    try:
        time.sleep(0.7)
        rows = [_baresip(pbx, tmp, seconds)]
        for aec in ("off", "speex"):
            rows.append(_box(pbx, tmp, aec, seconds, env))
        return rows
    finally:
        pbx.cleanup()
        jackd.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            jackd.wait(5)


def table(rows: list[dict[str, Any]]) -> str:
    ref = rows[0]
    ref_rate = sum(ref["counts"].values()) / max(ref["packets"] / PACKETS_PER_SECOND, 1e-9)
    out = ["| process (under callgrind) | M instructions per call-second | vs baresip "
           "| of which media loop | of which jack plugin | the rest (main, Python threads) "
           "| packets/s in the window |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        call_s = max(r["packets"] / PACKETS_PER_SECOND, 1e-9)
        total = sum(r["counts"].values()) / call_s
        own = total - r["counts"].get("plugin", 0) / call_s

        def part(key: str, r: dict[str, Any] = r, call_s: float = call_s) -> str:
            return f"{r['counts'][key] / call_s / 1e6:.2f}" if key in r["counts"] else "—"

        out.append(f"| {r['who']} | {total / 1e6:.2f} | {total / ref_rate:.2f}x | "
                   f"{part('loop')} | {part('plugin')} | {part('other')} "
                   f"| {r['packets'] / r['span']:.1f} |")
        if "plugin" in r["counts"]:
            out.append(f"| &nbsp;&nbsp;the box less the jack plugin | {own / 1e6:.2f} | "
                       f"{own / ref_rate:.2f}x | | | | |")
    boxes = [r for r in rows if r.get("loop_objects")]
    if boxes:
        out.append("\n| media loop thread, M instructions per call-second | "
                   + " | ".join(GROUPS) + " | top modules of the box's core |")
        out.append("|---|" + "---:|" * len(GROUPS) + "---|")
    for r in boxes:
        call_s = max(r["packets"] / PACKETS_PER_SECOND, 1e-9)
        by: dict[str, float] = {}
        for path, n in r["loop_objects"].items():
            by[group(path)] = by.get(group(path), 0) + n / call_s
        core = sorted(((n, path.rsplit("/", 1)[-1].split(".")[0])
                       for path, n in r["loop_objects"].items()
                       if group(path) == GROUPS[0]), reverse=True)[:3]
        top = ", ".join(f"{name} {n / call_s / 1e6:.2f}" for n, name in core)
        out.append(f"| {r['who']} | " + " | ".join(f"{by.get(g, 0) / 1e6:.2f}" for g in GROUPS)
                   + f" | {top} |")
    late = [f"{r['who']}: {r['late']} late wake-ups of its loop since the call began"
            + (f", {r['xruns']} card xruns" if r["xruns"] is not None else "")
            for r in rows if r["late"] is not None]
    out.append("\nA call-second is 50 RTP packets sent by the process in the window (a process "
               "that cannot keep real time under valgrind sends fewer: see the last column). "
               + "; ".join(late))
    return "\n".join(out)
