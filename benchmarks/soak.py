"""Soak (``./build.sh soak [--calls N]``): one real ``intercom run`` process and baresip as the
reception phone (5001), both registered with Asterisk 22, and N calls back to back in a fixed
mix: outgoing answered / busy (baresip refuses: 486) / cancelled by the box / ring timeout (the
box's ``calls.ring_timeout``), incoming with the door code as RFC 4733 DTMF (the door must
open) / with baresip's re-INVITEs (hold, resume) / cancelled by the caller / refused by the box.
Asterisk is restarted every 200 calls.

Reported: failures per kind (a step that did not happen within its time; target 0), and at the
start (after a warm-up of one round of every kind) against the end: the box's RSS, open file
descriptors, threads, CPU per call, and the status counters that moved. Any growth from start to
end over hundreds of calls is a leak to find.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from devtools.asterisk import Asterisk
from devtools.baresip import Baresip
from devtools.box.process import Intercom
from devtools.waiting import wait_for
from firmware.control import request

from .procstat import Sample, cpu_seconds, sample

RESTART_EVERY = 200
DOOR_CODE = "*1"


class Soak:
    def __init__(self, tmp: Path) -> None:
        self.pbx = Asterisk(direct_media=True).start()  # its re-INVITEs move the media
        self.phone = Baresip(self.pbx, "5001", tmp=tmp / "baresip").start()
        self.box = Intercom(tmp / "box", self.pbx.port, log_level="info",
                            audio={"capture": "tone:700", "playback": "null",
                                   "echo_canceller": "off"},
                            calls={"door_code": DOOR_CODE, "ring_timeout": 2.5,
                                   "door_code_max_failures": 1000}).start()
        self.wait_idle(20)

    # ------------------------------------------------------------------ the box
    def cmd(self, cmd: str, **args: object) -> dict:
        return request(str(self.box.sock), cmd, timeout=10, **args)

    def state(self) -> str:
        return str(self.cmd("status").get("state"))

    def wait_state(self, state: str, timeout: float = 10) -> None:
        wait_for(lambda: self.state() == state, timeout, 0.05, f"the box {state}")

    def wait_idle(self, timeout: float = 10) -> None:
        wait_for(lambda: (s := self.cmd("status")).get("state") == "idle"
                 and s.get("registered", True), timeout, 0.05, "the box idle")

    def call_box(self) -> None:
        self.phone.command("dial", f"sip:5002@127.0.0.1:{self.pbx.port}")
        self.wait_state("ringing")

    def box_calls(self) -> None:
        assert self.cmd("call", target="5001").get("ok")
        self.phone.wait_event("CALL_INCOMING", 10)

    def closed(self) -> None:
        self.phone.wait_event("CALL_CLOSED", 15)
        self.wait_idle(15)

    # ------------------------------------------------------------------ the mix
    def out_answered(self) -> None:
        self.box_calls()
        self.phone.command("accept")
        self.phone.wait_event("CALL_ESTABLISHED", 10)
        self.wait_state("in_call")
        time.sleep(0.5)
        self.cmd("hangup")
        self.closed()

    def out_busy(self) -> None:
        self.box_calls()
        self.phone.command("hangup")  # refuses the ringing call: 486
        self.closed()

    def out_cancelled(self) -> None:
        self.box_calls()
        self.cmd("hangup")
        self.closed()

    def out_ring_timeout(self) -> None:
        self.box_calls()
        self.closed()  # the box gives up after calls.ring_timeout

    def in_dtmf(self) -> None:
        opened = int(self.cmd("status").get("door_openings", 0))
        self.call_box()
        self.cmd("answer")
        self.phone.wait_event("CALL_ESTABLISHED", 10)
        self.wait_state("in_call")
        time.sleep(0.3)
        self.phone.command("sndcode", DOOR_CODE)
        wait_for(lambda: int(self.cmd("status").get("door_openings", 0)) > opened, 10, 0.05,
                 "the door to open")
        self.phone.command("hangup")
        self.closed()

    def media(self) -> dict:
        return self.cmd("status").get("media") or {}

    def in_reinvite(self) -> None:
        """Asterisk's direct-media re-INVITE points the box's RTP at baresip; when baresip
        holds, Asterisk re-INVITEs the box back to itself, and to baresip again on resume."""
        low, high = self.phone.rtp_ports

        def direct() -> bool:
            return low <= int(self.media().get("remote_port") or 0) <= high

        self.call_box()
        self.cmd("answer")
        self.phone.wait_event("CALL_ESTABLISHED", 10)
        self.wait_state("in_call")
        wait_for(direct, 10, 0.05, "Asterisk's re-INVITE moving the media to baresip")
        self.phone.command("hold")
        wait_for(lambda: not direct(), 10, 0.05, "the re-INVITE of the hold")
        self.phone.command("resume")
        wait_for(direct, 10, 0.05, "the re-INVITE of the resume")
        assert self.state() == "in_call"
        self.cmd("hangup")
        self.closed()

    def in_cancelled(self) -> None:
        self.call_box()
        self.phone.command("hangup")
        self.closed()

    def in_refused(self) -> None:
        self.call_box()
        self.cmd("hangup")  # refuses the ringing call
        self.closed()

    def recover(self) -> None:
        """After a failed step: end whatever is left on both sides."""
        with contextlib.suppress(Exception):
            self.phone.command("hangup")
            self.cmd("hangup")
            self.wait_idle(20)
        time.sleep(0.5)
        self.phone.events.clear()
        with contextlib.suppress(Exception):
            self.phone._read()
        self.phone.events.clear()

    def restart_pbx(self) -> None:
        self.pbx.stop()
        self.pbx.start()
        wait_for(lambda: self.pbx.registered("5001") and self.pbx.registered("5002"), 60, 0.5,
                 "both registered again")

    def close(self) -> None:
        self.box.stop()
        self.phone.stop()
        self.pbx.cleanup()


def kinds(soak: Soak) -> list[tuple[str, Callable[[], None]]]:
    return [("outgoing answered", soak.out_answered), ("outgoing busy (486)", soak.out_busy),
            ("outgoing cancelled", soak.out_cancelled),
            ("outgoing ring timeout", soak.out_ring_timeout),
            ("incoming, door code by DTMF", soak.in_dtmf),
            ("incoming, re-INVITEs (hold, resume)", soak.in_reinvite),
            ("incoming cancelled by the caller", soak.in_cancelled),
            ("incoming refused by the box", soak.in_refused)]


def run(calls: int, progress: bool = True) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    soak = Soak(tmp)
    mix = kinds(soak)
    done: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    errors: list[str] = []
    marks: dict[str, tuple[int, float, Sample, dict]] = {}
    assert soak.box.proc is not None
    pid = soak.box.proc.pid
    warmup = len(mix)
    cpu: list[float] = []  # the box's CPU seconds before each call
    restarts = 0
    started = time.monotonic()
    try:
        for n in range(calls + warmup):
            if n == warmup:
                marks["start"] = (n, time.monotonic(), sample(pid), soak.cmd("status"))
            if n > warmup and (n - warmup) % RESTART_EVERY == 0:
                soak.restart_pbx()
                restarts += 1
            name, step = mix[n % len(mix)]
            cpu.append(cpu_seconds(pid))
            try:
                step()
                done[name] += 1
            except AssertionError as exc:
                failed[name] += 1
                errors.append(f"call {n} ({name}): {str(exc)[:200]}")
                soak.recover()
            if progress and n and n % 50 == 0:
                print(f"  {n} calls, {sum(failed.values())} failed, "
                      f"{time.monotonic() - started:.0f} s", flush=True)
        cpu.append(cpu_seconds(pid))
        marks["end"] = (calls + warmup, time.monotonic(), sample(pid), soak.cmd("status"))
    finally:
        soak.close()
        shutil.rmtree(tmp, ignore_errors=True)
    # CPU per call over the first and the last tenth (whole rounds of the mix; the rounds with
    # an Asterisk restart left out of neither: restarts cost the box nothing measurable)
    w = len(mix) * max(1, calls // (10 * len(mix)))
    first = (cpu[warmup + w] - cpu[warmup]) / w
    last = (cpu[-1] - cpu[-1 - w]) / w
    return {"calls": calls, "done": done, "failed": failed, "errors": errors, "marks": marks,
            "restarts": restarts, "seconds": time.monotonic() - started,
            "cpu_window": w, "cpu_first": first, "cpu_last": last}


def table(r: dict) -> str:
    (n0, t0, s0, st0), (n1, t1, s1, st1) = r["marks"]["start"], r["marks"]["end"]
    calls = max(1, n1 - n0)
    out = [f"{r['calls']} calls (after a warm-up round of {n0}) in {r['seconds']:.0f} s, Asterisk "
           f"restarted {r['restarts']} times; failures: {sum(r['failed'].values())}\n",
           "| kind | calls | failed |", "|---|---:|---:|"]
    for name in sorted(set(r["done"]) | set(r["failed"])):
        out.append(f"| {name} | {r['done'][name] + r['failed'][name]} | {r['failed'][name]} |")
    out += ["", "| the box | start | end | growth |", "|---|---:|---:|---:|",
            f"| RSS (MB) | {s0.rss_mb:.1f} | {s1.rss_mb:.1f} | {s1.rss_mb - s0.rss_mb:+.1f} |",
            f"| open file descriptors | {s0.fds} | {s1.fds} | {s1.fds - s0.fds:+d} |",
            f"| threads | {s0.threads} | {s1.threads} | {s1.threads - s0.threads:+d} |",
            f"| CPU per call, first vs last {r['cpu_window']} calls (ms) | "
            f"{1000 * r['cpu_first']:.1f} | {1000 * r['cpu_last']:.1f} | "
            f"{1000 * (r['cpu_last'] - r['cpu_first']):+.1f} |",
            f"| CPU per call, mean over the run (ms) | - | "
            f"{1000 * (s1.cpu_s - s0.cpu_s) / calls:.1f} | - |",
            f"| wall time per call (s) | - | {(t1 - t0) / calls:.2f} | - |"]
    c0, c1 = st0.get("counters", {}), st1.get("counters", {})
    moved = sorted(k for k in set(c0) | set(c1) if c0.get(k, 0) != c1.get(k, 0))
    if moved:
        out += ["", "| status counter | start | end |", "|---|---:|---:|"]
        out += [f"| {k} | {c0.get(k, 0)} | {c1.get(k, 0)} |" for k in moved]
    out.append(f"\ndoor openings: {st0.get('door_openings')} -> {st1.get('door_openings')}")
    if r["errors"]:
        out += ["", "failures (first 10):", *[f"- {e}" for e in r["errors"][:10]]]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(prog="benchmarks.soak")
    p.add_argument("--calls", type=int, default=1000, help="calls after the warm-up round")
    args = p.parse_args()
    print(f"## Soak: {args.calls} calls back to back against Asterisk\n", flush=True)
    print(table(run(args.calls)), "\n", flush=True)


if __name__ == "__main__":
    main()
