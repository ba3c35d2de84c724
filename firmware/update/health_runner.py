"""``intercom health``: the I/O around ``firmware.update.health`` after every boot (root,
intercom-health.service, started after intercom.service).

Owns asking the box (``systemctl show intercom.service``, the intercom's control socket,
``ip -j addr``, the kernel command line), remembering across polls what one look cannot tell
(how long the service has been active, when it first registered, whether the PBX ever
answered), carrying the decisions out (``rauc status mark-good|mark-bad booted``,
``systemctl reboot``, U1's state and trial files, the health record ``trial-result.json``) and
saying each one in a single line on stdout (the unit sends it to the journal and the serial
console). Every answer from outside is checked: a command that fails or prints nonsense is one
line and a retry at the next poll, never a traceback. Knows nothing about SIP or what the
decisions mean.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..control import request
from . import health
from .health import Act, Decision, Facts, Limits, Service
from .slots import SlotPaths, booted_slot
from .state import Store, _read, one_line, write_atomic

UNIT = "intercom.service"
SHOW = ("LoadState", "ActiveState", "SubState", "NRestarts", "Result", "ExecMainCode",
        "ExecMainStatus", "ConditionResult")
CLD_EXITED = "1"  # ExecMainCode of a process that exited (not killed by a signal)


def parse_show(text: str) -> dict[str, str]:
    """``systemctl show -p ...`` output (Key=Value lines) -> the properties asked for."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in SHOW:
            props[key] = value.strip()
    return props


def service_from(props: dict[str, str] | None, active_for: float) -> Service:
    """The properties as ``health`` takes them; None (systemctl failed): "unknown"."""
    if props is None:
        return Service("unknown")
    restarts = props.get("NRestarts", "0")
    if props.get("LoadState") not in (None, "loaded"):
        return Service("missing")
    state = props.get("ActiveState") or "unknown"
    return Service(state=state, restarts=int(restarts) if restarts.isdigit() else 0,
                   active_for=active_for if state == "active" else 0.0,
                   skipped=props.get("ConditionResult") == "no" and state != "active",
                   config_refused=state != "active" and props.get("ExecMainCode") == CLD_EXITED
                   and props.get("ExecMainStatus") == "2")


def global_address(text: str) -> bool:
    """``ip -j addr show scope global`` output: any interface that is up with an address."""
    try:
        links = json.loads(text)
    except ValueError:
        return False
    if not isinstance(links, list):
        return False
    for link in links:
        if not isinstance(link, dict) or link.get("ifname") == "lo":
            continue
        flags, addrs = link.get("flags"), link.get("addr_info")
        flags = flags if isinstance(flags, list) else []
        addrs = addrs if isinstance(addrs, list) else []
        if "UP" in flags and any(isinstance(a, dict) and a.get("local") for a in addrs):
            return True
    return False


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return one_line(lines[-1]) if lines else "no message"


class SystemIO:
    """The box: systemd, the control socket, iproute2, RAUC (commands found on PATH)."""

    def __init__(self, socket: str, unit: str = UNIT, timeout: float = 30.0) -> None:
        self.socket = socket
        self.unit = unit
        self.timeout = timeout

    def _run(self, *cmd: str) -> tuple[int, str, str]:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout,
                                  check=False, errors="replace")
        except (OSError, subprocess.SubprocessError) as exc:
            return 127, "", f"{cmd[0]}: {exc}"
        return done.returncode, done.stdout, done.stderr

    def service(self) -> dict[str, str] | None:
        rc, out, _ = self._run("systemctl", "show", self.unit, "-p", ",".join(SHOW))
        props = parse_show(out) if rc == 0 else {}
        return props if "ActiveState" in props else None

    def status(self) -> dict[str, Any] | None:
        try:
            reply = request(self.socket, "status", timeout=5.0)
        except (OSError, ValueError):
            return None
        return reply if isinstance(reply, dict) and reply.get("ok") is True else None

    def has_address(self) -> bool:
        rc, out, _ = self._run("ip", "-j", "addr", "show", "scope", "global")
        return rc == 0 and global_address(out)

    def mark(self, good: bool) -> str | None:
        """``rauc status mark-good|mark-bad booted``; the error in one line, or None."""
        rc, out, err = self._run("rauc", "status", "mark-good" if good else "mark-bad", "booted")
        return None if rc == 0 else f"rauc status mark-{'good' if good else 'bad'}: " \
                                    f"{_last_line(err or out)}"

    def reboot(self) -> str | None:
        rc, out, err = self._run("systemctl", "reboot")
        return None if rc == 0 else f"systemctl reboot: {_last_line(err or out)}"


def say(line: str) -> None:
    print(f"intercom health: {one_line(line, 400)}", flush=True)


@dataclass
class _Memory:
    """What one look cannot tell, kept across polls of this boot."""

    active_since: float | None = None
    restarts: int = -1
    first_registered: float | None = None
    registered_since: float | None = None
    pbx_answered: bool = False
    marked_good: bool = False
    said: str = ""


class Runner:
    """One boot's health check: ``step()`` looks, decides, acts; ``run()`` until done."""

    def __init__(self, store: Store, io: SystemIO, booted: str | None,
                 limits: Limits | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 out: Callable[[str], None] = say) -> None:
        self.store = store
        self.io = io
        self.booted = booted
        self.limits = limits or Limits()
        self.clock = clock
        self.wall = wall
        self.out = out
        self.started = clock()
        self.mem = _Memory()
        self.rebooting = False

    # ------------------------------------------------------------------ the record
    @property
    def record_path(self) -> Path:
        return self.store.folder / health.RECORD

    def _record(self, trial: dict[str, Any] | None) -> dict[str, Any]:
        raw, why = _read(self.record_path)
        if why:
            self._say(f"{health.RECORD} ignored: {why}")
        return health.record_for(raw, trial)

    def _write_record(self, record: dict[str, Any] | None) -> None:
        with self.store.lock():
            if record is None:
                with contextlib.suppress(FileNotFoundError):
                    self.record_path.unlink()
                return
            body = json.dumps(record, sort_keys=True).encode() + b"\n"
            write_atomic(self.record_path, body, 0o644)

    # ------------------------------------------------------------------ looking
    def observe(self) -> tuple[Facts, dict[str, Any] | None, dict[str, Any]]:
        now = self.clock()
        elapsed = now - self.started
        m = self.mem
        props = self.io.service()
        service = service_from(props, 0.0)
        if service.state != "active" or service.restarts != m.restarts:
            m.active_since = now if service.state == "active" else None
        m.restarts = service.restarts
        active_for = now - m.active_since if m.active_since is not None else 0.0
        service = service_from(props, active_for)
        status = self.io.status()
        registered = None if status is None else status.get("registered") is True
        if registered:
            m.first_registered = elapsed if m.first_registered is None else m.first_registered
            m.registered_since = now if m.registered_since is None else m.registered_since
            m.pbx_answered = True
        else:
            m.registered_since = None
            if status is not None and health.pbx_answered(status.get("registrar_answer")):
                m.pbx_answered = True
        trial = self.store.read_trial()
        record = self._record(trial)
        view = health.trial_view(trial, record)
        trial_boot = view is not None and view.slot == self.booted
        facts = Facts(
            booted=self.booted, trial=view, elapsed=elapsed, service=service,
            registered=registered, first_registered=m.first_registered,
            registered_for=now - m.registered_since if m.registered_since is not None else 0.0,
            pbx_answered=m.pbx_answered,
            # only a trial boot past its bound asks: one process less per poll otherwise
            has_address=self.io.has_address()
            if trial_boot and elapsed >= self.limits.register_timeout else True,
            marked_good=m.marked_good)
        return facts, trial, record

    # ------------------------------------------------------------------ acting
    def _say(self, line: str) -> None:
        if line != self.mem.said:  # a retried failure is said once
            self.mem.said = line
            self.out(line)

    def step(self) -> Decision:
        """Look, decide, act once; returns what was decided (WAIT also after a failed act,
        which the next step retries)."""
        facts, trial, record = self.observe()
        d = health.decide(facts, self.limits)
        if d.act in (Act.WAIT, Act.DONE):
            if d.act is Act.DONE and d.message:
                self._say(d.message)
            return d
        try:
            ok = self._act(d, facts, trial, record)
        except OSError as exc:  # /data unwritable: said, retried; never a traceback
            self._say(f"cannot write {self.store.folder}: {exc.strerror or exc} ({d.message})")
            ok = False
        return d if ok else Decision(Act.WAIT, d.reason, d.message)

    def _act(self, d: Decision, f: Facts, trial: dict[str, Any] | None,
             record: dict[str, Any]) -> bool:
        t = f.trial
        if d.act is Act.MARK_GOOD:
            return self._mark_good(d.message)
        if d.act is Act.TRIAL_GOOD:
            assert t is not None
            if not self._mark_good(d.message):
                return False
            self.store.record("ok", d.reason, t.version, d.message, now=self.wall())
            self.store.clear_trial()
            self._write_record(None)
            return True
        if d.act in (Act.MARK_BAD, Act.REBOOT):
            assert t is not None
            self._write_record({**record, "failure": {"reason": d.reason, "message": d.message,
                                                      "at": self.wall()}})
            if d.act is Act.MARK_BAD:
                self.out(f"{d.message}: marking slot {t.slot} bad and rebooting into slot "
                         f"{t.from_slot} ({t.from_version})")
                if (err := self.io.mark(False)) is not None:
                    self.out(f"{err} (rebooting anyway: the slot's boot attempts run out)")
            else:
                self.out(d.message)
            return self._reboot()
        assert t is not None and trial is not None
        if d.act is Act.ROLLED_BACK:
            self.out(d.message)
            self.store.record("rolled_back", d.reason, t.version, d.message, now=self.wall())
            self._write_record({**record, "rolled_back_at": self.wall()})
        elif d.act is Act.REFUSE:
            self.out(d.message)
            self.store.refuse_version(t.version)
            with self.store.modify() as state:
                last = state["last"]
                if last.get("result") == "rolled_back" and last.get("version") == t.version:
                    last["message"] = one_line(f"{last.get('message')}; {d.message}")
            self.store.clear_trial()
            self._write_record(None)
        elif d.act is Act.INCONCLUSIVE:
            self.out(d.message)
            self._write_record({**record, "verdict": "inconclusive",
                                "inconclusive": record["inconclusive"] + 1})
        elif d.act is Act.RETRY:
            self.out(d.message)
            self._write_record({**record, "verdict": "retry"})
            self.store.clear_trial()
        return True

    def _mark_good(self, message: str) -> bool:
        if (err := self.io.mark(True)) is not None:
            self._say(f"{err} (retrying)")
            return False
        self.mem.marked_good = True
        self.out(message)
        return True

    def _reboot(self) -> bool:
        if (err := self.io.reboot()) is not None:
            self._say(f"{err} (retrying)")
            return False
        self.rebooting = True
        return True

    def run(self, poll: float = 5.0, sleep: Callable[[float], None] = time.sleep) -> int:
        """Until DONE or a reboot was asked for; after ``register_timeout`` it looks less often
        (a silent PBX or an inconclusive trial can keep it waiting for a long while)."""
        last: Decision | None = None
        while True:
            d = self.step()
            if d.act is Act.DONE or self.rebooting:
                return 0
            if d.act is Act.WAIT or d == last:  # an act that changed nothing waits a poll
                late = self.clock() - self.started >= self.limits.register_timeout
                sleep(max(poll, min(15.0, self.limits.register_timeout / 4)) if late else poll)
            last = d


def command(state_dir: str, socket: str, limits: Limits, poll: float = 5.0,
            cmdline: str = "/proc/cmdline") -> int:
    """``intercom health`` (root): the check of this boot, to its end."""
    if os.geteuid() != 0 and not os.access(state_dir, os.W_OK):
        print(f"intercom health: {state_dir} is not writable (run as root)", file=sys.stderr)
        return 1
    booted = booted_slot(SlotPaths(cmdline=Path(cmdline)))
    runner = Runner(Store(state_dir), SystemIO(socket), booted, limits)
    if booted is not None:
        say(f"slot {booted} booted: checking the intercom (register within "
            f"{limits.register_timeout:.0f} s on a trial boot)")
    return runner.run(poll)


def acknowledge(state_dir: str) -> int:
    """``intercom update --ack``: someone saw the rollback; the error LED stops blinking for it
    (the intercom reads the state file within 10 s), ``status`` keeps the record."""
    store = Store(state_dir)
    last = store.read()["last"]
    if last["result"] != "rolled_back" or last.get("acknowledged"):
        print(f"intercom: no rollback to acknowledge (last update: {last['result']})")
        return 0
    try:
        with store.modify() as state:
            state["last"]["acknowledged"] = True
    except OSError as exc:
        print(f"intercom: cannot write {state_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"intercom: acknowledged: {last['message']}")
    return 0


def install_hold(store: Store, version: str) -> str | None:
    """For the updater: why ``version`` must wait (its last trial was inconclusive and the
    intercom has not been registered long enough since), or None."""
    raw, _ = _read(store.folder / health.RECORD)
    return health.install_hold(raw, version)
