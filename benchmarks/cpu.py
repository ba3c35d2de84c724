"""CPU per call-minute and wake-ups per second: the intercom against baresip, both in one call
each to Asterisk's Echo() (extension 600) at the same time, measured from /proc in interleaved
windows (box, baresip, box, ...), so both see the same machine load.

Fair by construction: both run 8 kHz mono in and out at their normal log level (the box
``info``, baresip without ``-v``). baresip: aufile reading an 8 kHz mono 700 Hz WAV, jack at
8000 Hz mono on jackd's paced dummy driver. The box: ``tone:700`` into ``null``, which its
media loop makes and drops itself (no Python thread moves audio in that call), and its
production path, ALSA (both sides one device: the card-clocked loop of firmware/core/_card.pyx
where the build has it, else media/alsa.py's threads), on alsa-lib's jack plugin (Debian
libasound2-plugins) on a second dummy jackd at 8000 Hz. jackd is not counted for either.
Per-thread figures for the box say where its time goes.

On the ALSA path (echo canceller off, and speex: the default) the jack plugin runs libjack's
client threads inside the box's process; a real card has none of them. They are told apart from
the box's own threads by their backtraces (benchmarks/threadroles.py, gdb, read once before the
windows) and reported in rows of their own: "box's own threads" is the process less the plugin,
the figure to hold against baresip (whose jack module's threads, on its own dummy jackd, are in
baresip's row: the plugin's cost is the bench's, the box does not ship it). Wake-ups per second
come from the context switches of every thread (voluntary + involuntary): the target is one per
20 ms period (50/s) for the whole box plus what SIP needs, the loop thread shown alone.

The ALSA phases run twice: as the box runs on this machine (no ``fq`` in its kernel: with speex
the loop paces the packets itself, a second wake-up a period) and kernel-paced, as it runs over
the image's ``fq`` (``benchmarks/stamped``: loopback's qdisc counted as one that holds stamped
packets; the CPU and wake-ups are the kernel-paced loop's, the wire's timing is not fq's).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from devtools import jack_card
from devtools.asterisk import Asterisk
from devtools.baresip import Baresip
from devtools.box.process import Intercom
from devtools.tones import tone_wav
from devtools.waiting import wait_for

from . import threadroles

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parents[1]
STAMPED = Path(__file__).resolve().parent / "stamped"


def threads(pid: int) -> dict[str, tuple[float, int]]:
    """{thread name (tid): (CPU seconds, voluntary + involuntary context switches)}."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        try:  # nanoseconds on the CPU (utime+stime in stat count 10 ms ticks: too coarse)
            cpu = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (FileNotFoundError, ProcessLookupError, ValueError):
            fields = stat.rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        switches = sum(int(line.split()[1]) for line in status.splitlines()
                       if line.startswith(("voluntary_ctxt_switches",
                                           "nonvoluntary_ctxt_switches")))
        out[f"{name} ({task.name})"] = (cpu, switches)
    return out


def _cpu_seconds(pid: int) -> float:
    """The whole process's CPU seconds from /proc/PID/stat (flood and srtp use it)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


class Meter:
    """Accumulates per-thread CPU and switches over the windows it is given."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seconds = 0.0
        self.per_thread: dict[str, list[float]] = {}

    def window(self, seconds: float) -> None:
        a, t0 = threads(self.pid), time.monotonic()
        time.sleep(seconds)
        b, t1 = threads(self.pid), time.monotonic()
        self.seconds += t1 - t0
        for name, (cpu, sw) in b.items():
            cpu0, sw0 = a.get(name, (0.0, 0))
            acc = self.per_thread.setdefault(name, [0.0, 0.0])
            acc[0] += cpu - cpu0
            acc[1] += sw - sw0

    def cpu_per_min(self) -> float:
        return sum(v[0] for v in self.per_thread.values()) * 60 / self.seconds

    def wakeups(self) -> float:
        return sum(v[1] for v in self.per_thread.values()) / self.seconds

    def by_role(self, roles: dict[int, str]) -> dict[str, tuple[float, float]]:
        """{role: (CPU s per minute, wake-ups/s)}, threads summed by their role (a thread
        started after the roles were read counts as the box's: "other native thread")."""
        out: dict[str, list[float]] = {}
        for name, (cpu, sw) in self.per_thread.items():
            tid = int(name.rsplit("(", 1)[1].rstrip(")"))
            acc = out.setdefault(roles.get(tid, threadroles.OTHER), [0.0, 0.0])
            acc[0] += cpu
            acc[1] += sw
        return {r: (v[0] * 60 / self.seconds, v[1] / self.seconds) for r, v in out.items()}

    def rows(self) -> list[tuple[str, float, float]]:
        """(thread, CPU s per minute, wake-ups/s), most wake-ups first. Python threads carry
        no OS name here, so they are told apart by thread id."""
        r = [(name, v[0] * 60 / self.seconds, v[1] / self.seconds)
             for name, v in self.per_thread.items()]
        return sorted(r, key=lambda x: -x[2])


def _jack_alsa(tmp: Path) -> tuple[subprocess.Popen, dict[str, str]] | None:
    """A paced 8 kHz mono ALSA device without a sound card (devtools/jack_card.py), 20 ms
    periods, its ports on the dummy driver's: jackd and the box's environment, or None
    without alsa-lib's jack plugin."""
    if not jack_card.available():
        return None
    jackd, env = jack_card.start(tmp, "icjack", "system:playback_1", "system:capture_1", 160)
    time.sleep(0.7)
    return jackd, env


def _phase(pbx: Asterisk, tmp: Path, audio: dict, env: dict, label: str, seconds: float,
           windows: int, split: bool = False) -> list[dict]:
    """The box (``audio``) and baresip, each in a call to Echo(), windows interleaved;
    ``split``: tell the jack plugin's threads in the box from the box's own."""
    box: Intercom | None = None
    phone: Baresip | None = None
    try:
        box = Intercom(tmp / "box", pbx.port, audio=audio, log_level="info", env=env).start()
        wait_for(lambda: box.status().get("state") == "idle", 15, 0.1, "registration")
        time.sleep(1)
        assert box.proc is not None
        idle = Meter(box.proc.pid)
        idle.window(min(seconds, 10))
        wav = tone_wav(tmp / "tone8k.wav", 700, seconds=seconds * 4 + 30, rate=8000)
        phone = Baresip(pbx, "5001", tmp=tmp / "baresip", paced=True, source_wav=wav,
                        rate=8000, channels=1).start()
        assert box.cmd("call", "600")["ok"]
        wait_for(lambda: box.status().get("state") == "in_call", 15, 0.1, "the echo call")
        phone.command("dial", f"sip:600@127.0.0.1:{pbx.port}")
        phone.wait_event("CALL_ESTABLISHED", 15)
        time.sleep(1)
        roles = threadroles.roles(box.proc.pid) if split and threadroles.available() else {}
        if roles:
            time.sleep(2)  # gdb stopped the process: let the call (and the card) settle
        assert phone.proc is not None
        ours, theirs = Meter(box.proc.pid), Meter(phone.proc.pid)
        for _ in range(windows):  # interleaved: both calls run all the time
            ours.window(seconds / windows)
            theirs.window(seconds / windows)
        # who paced the packets, as the box says (the kernel-paced phases must say "kernel")
        pacing = (box.status().get("rtp") or {}).get("pacing", "?")
        label = f"{label}; pacing: {pacing}"
        rows = [{"client": label, "meter": ours, "idle": idle, "rss": _rss_mb(box.proc.pid),
                 "roles": roles if split else None},
                {"client": "baresip 1.0.0 (reference, same phase)", "meter": theirs,
                 "idle": None, "rss": _rss_mb(phone.proc.pid)}]
        box.cmd("hangup")
        phone.command("hangup")
        return rows
    finally:
        if box is not None:
            box.stop()
        if phone is not None:
            phone.stop()


ALSA_LABEL = "intercom (ALSA, 8 kHz mono, alsa-lib jack plugin, {aec})"


def run(seconds: float, windows: int = 6, paths: tuple[str, ...] = ("pump", "alsa")
        ) -> list[list[dict]]:
    """Up to four phases: (``pump``) the box with a tone source and a null sink (both inside
    its media loop) without and with its default echo canceller and (``alsa``, where alsa-lib's
    jack plugin exists) the box on its ALSA path without and with the canceller, the plugin's
    threads told apart; baresip measured alongside in each."""
    phases: list[list[dict]] = []
    pbx = Asterisk().start()
    tmp = Path(tempfile.mkdtemp(prefix="intercom-bench-"))
    try:
        if "pump" in paths:
            phases.append(_phase(pbx, tmp / "pump-noaec",
                                 {"capture": "tone:700", "playback": "null",
                                  "echo_canceller": "off"}, {},
                                 "intercom (tone:700 source, null sink, echo canceller off)",
                                 seconds, windows))
            phases.append(_phase(pbx, tmp / "pump", {"capture": "tone:700", "playback": "null"},
                                 {}, "intercom (tone:700 source, null sink, speex echo canceller)",
                                 seconds, windows))
        jack = _jack_alsa(tmp) if "alsa" in paths else None
        if jack is not None:
            try:
                for aec, kernel in (("off", False), ("speex", False), ("off", True),
                                    ("speex", True)):
                    what = "echo canceller off" if aec == "off" else "speex echo canceller"
                    env = jack[1]
                    if kernel:  # the loop as it runs over fq (benchmarks/stamped)
                        what += ", kernel-paced"
                        env = {**env, "PYTHONPATH": os.pathsep.join(
                            [str(STAMPED), str(REPO), os.environ.get("PYTHONPATH", "")])}
                    phases.append(_phase(pbx, tmp / f"alsa-{aec}-{int(kernel)}",
                                         {"capture": "icjack", "playback": "icjack",
                                          "echo_canceller": aec}, env,
                                         ALSA_LABEL.format(aec=what), seconds, windows,
                                         split=True))
            finally:
                jack[0].terminate()
                jack[0].wait(5)
    finally:
        pbx.cleanup()
    return phases


def _split_rows(r: dict, ref: float) -> list[str]:
    """The box's own threads and the jack plugin's, each against baresip (same phase)."""
    by = r["meter"].by_role(r["roles"])
    own = [v for k, v in by.items() if k != threadroles.PLUGIN]
    cpu, wk = sum(c for c, _ in own), sum(w for _, w in own)
    pc, pw = by.get(threadroles.PLUGIN, (0.0, 0.0))
    return [f"| &nbsp;&nbsp;of which the box's own threads | {cpu:.2f} | {cpu / ref:.2f}x "
            f"| {wk:.0f} | |",
            f"| &nbsp;&nbsp;of which the jack plugin's threads (a real card has none) | "
            f"{pc:.2f} | {pc / ref:.2f}x | {pw:.0f} | |"]


def wakeups_table(phases: list[list[dict]]) -> str:
    """Wake-ups per second in the call: the whole box, the box less the jack plugin, the media
    loop alone, against the 50/s of one wake-up per 20 ms period."""
    out = ["| box in a call | wake-ups/s, whole process | less the jack plugin | media loop "
           "thread | main thread (SIP, control) | vs 50/s (box less plugin) |",
           "|---|---:|---:|---:|---:|---:|"]
    for rows in phases:
        r = rows[0]
        m = r["meter"]
        by = m.by_role(r["roles"]) if r["roles"] else {}
        plugin = by.get(threadroles.PLUGIN, (0.0, 0.0))[1]
        loop = by.get(threadroles.LOOP, (float("nan"), float("nan")))[1]
        main = by.get(threadroles.MAIN, (float("nan"), float("nan")))[1]
        own = m.wakeups() - plugin
        out.append(f"| {r['client']} | {m.wakeups():.0f} | {own:.0f} | {loop:.0f} | {main:.1f} "
                   f"| {own / 50:.2f}x |")
    return "\n".join(out)


def table(phases: list[list[dict]]) -> str:
    out = ["| client | CPU s per call-minute | vs baresip (same phase) | wake-ups/s in call "
           "| peak RSS MB |", "|---|---:|---:|---:|---:|"]
    for rows in phases:
        ref = rows[-1]["meter"].cpu_per_min()
        for r in rows:
            m = r["meter"]
            out.append(f"| {r['client']} | {m.cpu_per_min():.2f} | "
                       f"{m.cpu_per_min() / ref:.2f}x | {m.wakeups():.0f} | {r['rss']:.1f} |")
            if r.get("roles"):
                out.extend(_split_rows(r, ref))
            elif r.get("roles") == {}:
                out.append("| &nbsp;&nbsp;(the jack plugin's threads not told apart: gdb is "
                           "missing or could not attach) | | | | |")
    if any(rows[0].get("roles") for rows in phases):
        out.append("\nWake-ups per second in the call (context switches of every thread):\n")
        out.append(wakeups_table([rows for rows in phases if rows[0].get("roles")]))
    for rows in phases:
        ours, idle = rows[0]["meter"], rows[0]["idle"]
        roles = rows[0].get("roles") or {}
        out.append(f"\n{rows[0]['client']}: idle and registered "
                   f"{idle.cpu_per_min() / 60 * 100:.2f} % of a core, {idle.wakeups():.1f} "
                   "wake-ups/s.\n")
        out.append("| thread | in call: CPU s/min | wake-ups/s | idle: CPU s/min | wake-ups/s |")
        out.append("|---|---:|---:|---:|---:|")
        idle_rows = {n: (c, w) for n, c, w in idle.rows()}
        for name, cpu, wk in ours.rows():
            ic, iw = idle_rows.pop(name, (0.0, 0.0))
            tid = int(name.rsplit("(", 1)[1].rstrip(")"))
            shown = f"{name}: {roles[tid]}" if tid in roles else name
            out.append(f"| {shown} | {cpu:.3f} | {wk:.1f} | {ic:.3f} | {iw:.1f} |")
        out.append("\n| baresip thread (same phase) | CPU s/min | wake-ups/s |\n|---|---:|---:|")
        for name, cpu, wk in rows[-1]["meter"].rows():
            out.append(f"| {name} | {cpu:.3f} | {wk:.1f} |")
    return "\n".join(out)
