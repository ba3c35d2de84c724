"""Registration storm: N real ``intercom run`` processes (each on its own loopback address
127.0.1.x, port 5060, its own control socket and folder, ``tone:`` audio into a WAV sink,
simulated pins) against one Asterisk with N generated endpoints (extensions 6000...).

Counted at Asterisk's socket: a raw AF_PACKET socket on ``lo`` timestamps (in the kernel) every
REGISTER that reaches Asterisk's port and every 200 it answers to one, so "registered" means
Asterisk said so, per box address. Measured: the time until every box is registered from a cold
start (all processes started at once) and after Asterisk is stopped for ``DOWN`` s and started
again (each box notices the outage by itself, its keep-alive unanswered), the REGISTER rate per
second (histogram), Asterisk's CPU, the boxes' idle CPU and RSS; then up to 16 concurrent calls
box -> Asterisk -> box, each direction's audio checked by its FFT peak (every box sends its own
tone).

Both over UDP and over TCP (a PBX restart drops every box's connection at the same instant).
Reference in the same run: the same fleet with the random spread pinned off
(``firmware.sip.registration.SPREAD_SOURCE`` as the unit tests pin it, and the TCP reconnect's
source), which is the firmware before the fix: every retry and reconnect exactly its backoff.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from devtools.asterisk import Asterisk
from devtools.paths import REPO
from devtools.waiting import wait_for
from firmware.control import request

from .procstat import cpu_seconds, sample

# Seconds Asterisk stays stopped: longer than a keep-alive interval plus Timer F (32 s), so that
# every box notices (a shorter outage is bridged: the OPTIONS retransmissions reach the new
# Asterisk, which restored its contacts from astdb, and nothing needs to register again).
DOWN = 50.0
SIP = {"register_expires": 300, "keepalive": "options", "keepalive_interval": 15,
       "retry_min": 2, "retry_max": 30}
SO_TIMESTAMPNS = 35
ETH_P_ALL = 0x0003
NO_SPREAD = ("import sys; from firmware.sip import registration as r; from firmware import net; "
             "r.SPREAD_SOURCE = lambda: 0.0; "
             "net.TcpTransport.rand = property(lambda self: lambda: 0.0, lambda self, v: None); "
             "from firmware.cli import main; sys.exit(main(sys.argv[1:]))")


def box_ip(i: int) -> str:
    return f"127.0.1.{i + 1}"


def tone_hz(i: int) -> int:
    return 300 + 25 * i


class RegisterWire:
    """REGISTERs into Asterisk's port and its 200s to them, kernel-timestamped on ``lo``."""

    def __init__(self, pbx_port: int) -> None:
        self.port = pbx_port
        self.registers: list[tuple[float, str]] = []  # (time, the box's user name)
        self.ok: list[tuple[float, str]] = []
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cseq = re.compile(rb"\r\nCSeq\s*:\s*\d+\s+REGISTER", re.I)
        user = re.compile(rb"\r\n(?:From|f)\s*:[^\r\n]*?sips?:([^@;>\s]+)@", re.I)
        while not self._stop:
            try:
                data, anc, _, addr = self.sock.recvmsg(65535, 64)
            except TimeoutError:
                continue
            if addr[2] != socket.PACKET_HOST or len(data) < 42:
                continue  # lo shows each packet twice: keep the arriving copy
            ip = data[14:]
            if ip[0] >> 4 != 4 or ip[9] not in (6, 17):
                continue
            ihl = (ip[0] & 15) * 4
            sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
            head = 8 if ip[9] == 17 else (ip[ihl + 12] >> 4) * 4  # UDP, TCP
            payload = ip[ihl + head:]
            if dport == self.port and payload.startswith(b"REGISTER "):
                if m := user.search(payload):
                    self.registers.append((_stamp(anc), m.group(1).decode()))
            elif sport == self.port and payload.startswith(b"SIP/2.0 200") and \
                    cseq.search(payload) and (m := user.search(payload)):
                self.ok.append((_stamp(anc), m.group(1).decode()))

    def all_registered_since(self, t0: float, addresses: set[str]) -> float | None:
        """When the last of ``addresses`` (user names) got its first 200 after ``t0`` (None:
        not all yet)."""
        first: dict[str, float] = {}
        for t, ip in list(self.ok):
            if t >= t0 and ip in addresses and ip not in first:
                first[ip] = t
        return max(first.values()) if len(first) == len(addresses) else None

    def histogram(self, t0: float, t1: float) -> Counter[int]:
        return Counter(int(t - t0) for t, _ in list(self.registers) if t0 <= t <= t1)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def _stamp(anc: list) -> float:
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec / 1e9
    return time.time()


def storm_pbx(n: int, password: str) -> Asterisk:
    """Asterisk with ``n`` more endpoints (6000...: the phone template, context ``storm``,
    which dials any of them for 20 s)."""
    pbx = Asterisk(rtp_base=41000)
    etc = pbx.dir / "etc"
    endpoints = "".join(
        f"\n[{6000 + i}](phone-endpoint)\ncontext=storm\nauth={6000 + i}\naors={6000 + i}\n"
        f"\n[{6000 + i}](phone-auth)\nusername={6000 + i}\npassword={password}\n"
        f"\n[{6000 + i}](phone-aor)\n" for i in range(n))
    with open(etc / "pjsip.conf", "a") as f:
        f.write(endpoints)
    with open(etc / "extensions.conf", "a") as f:
        f.write("\n[storm]\nexten => _6XXX,1,Dial(PJSIP/${EXTEN},20)\n same => n,Hangup()\n")
    text = (etc / "rtp.conf").read_text()
    (etc / "rtp.conf").write_text(re.sub(r"rtpend=\d+", "rtpend=41998", text))
    return pbx


@dataclass
class Fleet:
    pbx: Asterisk
    tmp: Path
    password: str
    spread: bool
    transport: str = "udp"
    procs: list[subprocess.Popen] = field(default_factory=list)

    def folder(self, i: int) -> Path:
        return self.tmp / f"box{i:03d}"

    def config(self, i: int) -> Path:
        d = self.folder(i)
        d.mkdir(parents=True, exist_ok=True)
        doc = {
            "sip": {**SIP, "server": "127.0.0.1", "port": self.pbx.port, "username": str(6000 + i),
                    "password": self.password, "local_address": box_ip(i), "local_port": 5060,
                    "transport": self.transport},
            "control": {"socket": str(d / "control.sock")},
            "media": {"rtp_port": 0, "address": box_ip(i)},
            "audio": {"capture": f"tone:{tone_hz(i)}", "playback": f"wav:{d / 'rx.wav'}",
                      "echo_canceller": "off"},
            "calls": {"auto_answer": True},
            "gpio": {"pin_factory": "mock"},
            "update": {"state_dir": str(d / "update")},
            "log": {"level": "info"},
        }
        path = d / "intercom.yaml"
        path.write_text(json.dumps(doc))
        return path

    def start(self, n: int) -> None:
        configs = [self.config(i) for i in range(n)]
        argv = ["-m", "firmware"] if self.spread else ["-c", NO_SPREAD]
        for i, path in enumerate(configs):
            self.procs.append(subprocess.Popen(
                [sys.executable, *argv, "run", "--config", str(path)], cwd=REPO,
                stdin=subprocess.DEVNULL, stdout=open(self.folder(i) / "intercom.log", "ab"),
                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}))

    def cmd(self, i: int, cmd: str, **args: object) -> dict:
        try:
            return request(str(self.folder(i) / "control.sock"), cmd, timeout=10, **args)
        except (OSError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}

    def alive(self) -> None:
        dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
        if dead:
            log = (self.folder(dead[0]) / "intercom.log").read_text(errors="replace")
            raise RuntimeError(f"{len(dead)} box(es) exited, box {dead[0]}:\n{log[-2000:]}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(2)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _wait_all(wire: RegisterWire, fleet: Fleet, t0: float, addresses: set[str],
              timeout: float) -> float:
    def done() -> float | None:
        fleet.alive()
        return wire.all_registered_since(t0, addresses)
    return wait_for(done, timeout, 0.5, f"all {len(addresses)} boxes registered") - t0


def _pbx_cpu(pbx: Asterisk) -> float:
    assert pbx.proc is not None
    return cpu_seconds(pbx.proc.pid)


def run_fleet(n: int, spread: bool, idle_s: float, calls: int, transport: str = "udp") -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-storm-"))
    password = secrets.token_hex(12)
    pbx = storm_pbx(n, password).start()
    wire = RegisterWire(pbx.port)
    fleet = Fleet(pbx, tmp, password, spread, transport)
    addresses = {str(6000 + i) for i in range(n)}
    out: dict = {"n": n, "spread": spread, "transport": transport}
    try:
        cpu0, t0 = _pbx_cpu(pbx), time.time()
        fleet.start(n)
        out["cold_s"] = _wait_all(wire, fleet, t0, addresses, 120 + 3 * n)
        out["cold_pbx_cpu_s"] = _pbx_cpu(pbx) - cpu0
        out["cold_hist"] = wire.histogram(t0, t0 + out["cold_s"])
        if idle_s > 0:
            out.update(_idle(fleet, pbx, idle_s))
        t_down = time.time()
        pbx.stop()
        time.sleep(max(0.0, DOWN - (time.time() - t_down)))
        pbx.start()
        cpu0, t_up = _pbx_cpu(pbx), time.time()
        out["restart_s"] = _wait_all(wire, fleet, t_up, addresses, 120 + n)
        out["restart_pbx_cpu_s"] = _pbx_cpu(pbx) - cpu0
        out["restart_hist"] = wire.histogram(t_up, t_up + out["restart_s"])
        wire.close()
        if calls:
            out.update(_calls(fleet, pbx, n, calls))
    finally:
        wire.close()
        fleet.stop()
        pbx.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _idle(fleet: Fleet, pbx: Asterisk, seconds: float) -> dict:
    time.sleep(5)
    pids = [p.pid for p in fleet.procs]
    before = [cpu_seconds(pid) for pid in pids]
    pbx0 = _pbx_cpu(pbx)
    time.sleep(seconds)
    after = [sample(pid) for pid in pids]
    fleet.alive()
    used = sum(a.cpu_s - b for a, b in zip(after, before, strict=True))
    return {"idle_s": seconds, "idle_cpu_pct": 100 * used / seconds,
            "idle_pbx_cpu_pct": 100 * (_pbx_cpu(pbx) - pbx0) / seconds,
            "rss_total_mb": sum(a.rss_mb for a in after),
            "rss_mean_mb": sum(a.rss_mb for a in after) / len(after),
            "threads_mean": sum(a.threads for a in after) / len(after)}


def _peak_hz(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    x = x[len(x) // 4:]  # the call's start (Asterisk bridging) left out
    if len(x) < 4000:
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0
    return float(np.fft.rfftfreq(len(x), 1 / 8000)[int(spectrum.argmax())])


def _calls(fleet: Fleet, pbx: Asterisk, n: int, calls: int) -> dict:
    """``calls`` boxes each call one of the other half at once; 6 s of talk; both directions'
    audio judged by the FFT peak of what each side recorded."""
    calls = min(calls, n // 2)
    pairs = [(i, n // 2 + i) for i in range(calls)]
    for a, b in pairs:
        with contextlib.suppress(FileNotFoundError):
            (fleet.folder(a) / "rx.wav").unlink()
            (fleet.folder(b) / "rx.wav").unlink()
    cpu0 = _pbx_cpu(pbx)
    t0 = time.time()
    for a, b in pairs:
        reply = fleet.cmd(a, "call", target=str(6000 + b))
        assert reply.get("ok"), reply
    wait_for(lambda: all(fleet.cmd(i, "status").get("state") == "in_call"
                         for p in pairs for i in p), 60, 0.5, f"{calls} calls up")
    up_s = time.time() - t0
    time.sleep(6)
    pbx_pct = 100 * (_pbx_cpu(pbx) - cpu0) / (time.time() - t0)
    for a, _ in pairs:
        fleet.cmd(a, "hangup")
    wait_for(lambda: all(fleet.cmd(i, "status").get("state") == "idle"
                         for p in pairs for i in p), 30, 0.5, "every call ended")
    good = 0
    for a, b in pairs:
        heard_b = _peak_hz(fleet.folder(b) / "rx.wav")  # b hears a's tone
        heard_a = _peak_hz(fleet.folder(a) / "rx.wav")
        good += abs(heard_b - tone_hz(a)) <= 8
        good += abs(heard_a - tone_hz(b)) <= 8
    return {"calls": calls, "calls_up_s": up_s, "calls_pbx_cpu_pct": pbx_pct,
            "directions_ok": good, "directions": 2 * calls}


def run(n: int = 100, idle_s: float = 30.0, calls: int = 16,
        transports: tuple[str, ...] = ("udp", "tcp")) -> list[dict]:
    """Per transport the reference (no spread) first, then the firmware as it is; only the
    first transport's shipped fleet idles and calls."""
    rows = []
    for k, transport in enumerate(transports):
        rows.append(run_fleet(n, False, 0.0, 0, transport))
        rows.append(run_fleet(n, True, idle_s if k == 0 else 0.0, calls if k == 0 else 0,
                              transport))
    return rows


def _hist_line(h: Counter[int]) -> str:
    if not h:
        return "-"
    return " ".join(str(h.get(s, 0)) for s in range(max(h) + 1))


def _comparison(ref: dict, ours: dict) -> list[str]:
    out = [f"### SIP over {ours['transport'].upper()}\n",
           "| | spread (as shipped) | no spread (reference) | vs reference |",
           "|---|---:|---:|---:|"]

    def row(label: str, key: str, fmt: str) -> None:
        a, b = ours[key], ref[key]
        out.append(f"| {label} | {a:{fmt}} | {b:{fmt}} | {f'{a / b:.2f}x' if b else '-'} |")

    def peak(label: str, key: str) -> None:
        a, b = max(ours[key].values(), default=0), max(ref[key].values(), default=0)
        out.append(f"| {label} | {a} | {b} | {f'{a / b:.2f}x' if b else '-'} |")

    row("cold start: all registered (s)", "cold_s", ".1f")
    row("cold start: Asterisk CPU (s)", "cold_pbx_cpu_s", ".2f")
    peak("cold start: peak REGISTERs/s at Asterisk", "cold_hist")
    row("Asterisk restart: all registered again (s)", "restart_s", ".1f")
    row("Asterisk restart: Asterisk CPU (s)", "restart_pbx_cpu_s", ".2f")
    peak("Asterisk restart: peak REGISTERs/s at Asterisk", "restart_hist")
    out += ["", "REGISTERs Asterisk received per second (second 0: all boxes started, resp. "
            "Asterisk up again):", "",
            f"- cold, spread: {_hist_line(ours['cold_hist'])}",
            f"- cold, reference: {_hist_line(ref['cold_hist'])}",
            f"- restart, spread: {_hist_line(ours['restart_hist'])}",
            f"- restart, reference: {_hist_line(ref['restart_hist'])}", ""]
    return out


def table(rows: list[dict]) -> str:
    ours = rows[1]
    out = [f"{ours['n']} boxes (`intercom run` processes) on one Asterisk 22; keep-alive "
           f"{SIP['keepalive_interval']} s, retry {SIP['retry_min']}-{SIP['retry_max']} s, "
           f"Asterisk stopped for {DOWN:.0f} s; reference: the same firmware with the random "
           "spread of retries, refreshes, keep-alives and reconnects pinned off (the firmware "
           "before the fix)\n"]
    for ref, shipped in zip(rows[::2], rows[1::2], strict=True):
        out += _comparison(ref, shipped)
    if "idle_cpu_pct" in ours:
        out += [f"### Idle and calls ({ours['transport'].upper()})\n",
                "| idle, registered | value |", "|---|---:|",
                f"| boxes' total CPU over {ours['idle_s']:.0f} s (% of one core) | "
                f"{ours['idle_cpu_pct']:.2f} |",
                f"| per box (ms CPU per minute) | "
                f"{ours['idle_cpu_pct'] / ours['n'] * 600:.1f} |",
                f"| Asterisk CPU (% of one core) | {ours['idle_pbx_cpu_pct']:.2f} |",
                f"| boxes' total RSS (MB) | {ours['rss_total_mb']:.0f} |",
                f"| RSS per box (MB) | {ours['rss_mean_mb']:.1f} |",
                f"| threads per box | {ours['threads_mean']:.1f} |", ""]
    if "calls" in ours:
        out += [f"{ours['calls']} concurrent calls box -> Asterisk -> box: all up in "
                f"{ours['calls_up_s']:.1f} s, Asterisk {ours['calls_pbx_cpu_pct']:.1f} % of "
                f"one core, audio right (FFT peak within 8 Hz of the sender's tone) in "
                f"{ours['directions_ok']}/{ours['directions']} directions"]
    return "\n".join(out)
