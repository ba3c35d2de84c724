"""The door-code lockout kept on disk, so that a restart of the service does not reset it.

Owns one small JSON file in the runtime directory (``/run/intercom``, where the control socket
lives; systemd keeps it over a restart with ``RuntimeDirectoryPreserve=restart``, a reboot
clears it): the times of the wrong codes still inside the window and the lockout's end, on
``CLOCK_MONOTONIC``, which every process of one boot shares, with the kernel's boot id. A file
from another boot is ignored (the monotonic clock restarted with the kernel): a reboot resets
the lockout. Written atomically (a temporary file renamed over the old one).

A file that exists but cannot be read or makes no sense fails CLOSED: the door code is locked
for one lockout period, said in one log line (``Keeper``, the running intercom's side).
Nothing here can stop the start-up. Knows nothing
about SIP, GPIO or the supervisor's rules beyond the shape of ``LockoutState``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .supervisor import LockoutState

log = logging.getLogger("intercom")

FILE_NAME = "door-lockout.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MAX_BYTES = 4096  # the file holds a few numbers: anything bigger is not ours
MAX_FAILURES = 1000  # calls.door_code_max_failures is at most 1000


def boot_id(path: Path = BOOT_ID) -> str:
    """This boot's id ("" when the kernel does not say)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Loaded:
    """What was found: ``state`` to hand the supervisor (None: nothing kept), ``problem``: why
    the file could not be believed (the caller then locks for one period), ``note``: a file
    ignored for a good reason (another boot)."""

    state: LockoutState | None = None
    problem: str | None = None
    note: str | None = None


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return float(value)


def parse(text: bytes, current_boot: str) -> Loaded:
    """The kept state from the file's bytes (pure: tested without a file)."""
    if len(text) > MAX_BYTES:
        return Loaded(problem=f"larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(text.decode("ascii"))
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise ValueError("not a version 1 lockout record")
        kept_boot = doc.get("boot_id")
        if not isinstance(kept_boot, str):
            raise ValueError("no boot id")
        failures = doc.get("failures")
        if not isinstance(failures, list) or len(failures) > MAX_FAILURES:
            raise ValueError("failures is not a short list")
        times = tuple(_number(t) for t in failures)
        until = doc.get("lockout_until")
        until = None if until is None else _number(until)
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        return Loaded(problem=str(exc) or type(exc).__name__)
    if kept_boot != current_boot:
        return Loaded(note="written before the last reboot: the lockout starts afresh")
    return Loaded(LockoutState(times, until))


def load(folder: Path) -> Loaded:
    """The kept state from ``folder``; a missing file is no state and no problem."""
    path = folder / FILE_NAME
    try:
        with path.open("rb") as f:
            text = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return Loaded()
    except OSError as exc:
        return Loaded(problem=exc.strerror or str(exc))
    return parse(text, boot_id())


def render(state: LockoutState, current_boot: str) -> bytes:
    return json.dumps({"version": 1, "boot_id": current_boot,
                       "failures": list(state.failures),
                       "lockout_until": state.lockout_until}).encode("ascii")


def save(folder: Path, state: LockoutState) -> None:
    """Replace the file atomically (mode 0600); raises OSError for the caller to log."""
    path = folder / FILE_NAME
    tmp = folder / f".{FILE_NAME}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(render(state, boot_id()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


class Keeper:
    """The running intercom's side of the file: ``load`` once at start (a file that cannot be
    believed fails closed: locked for one ``lockout`` period, one log line), then ``keep`` after
    every supervisor step writes the state when it changed (a failed write is logged, never
    raised: the door keeps working, only a restart would forget)."""

    def __init__(self, folder: Path, lockout: float) -> None:
        self.folder = folder
        self.lockout = lockout
        self._kept: LockoutState | None = None  # what the file says now; None: not loaded yet

    def load(self, now: float) -> LockoutState | None:
        found = load(self.folder)
        self._kept = found.state or LockoutState()
        if found.note:
            log.info("door-code lockout file ignored: %s", found.note)
        if found.problem is None:
            return found.state
        log.warning("door-code lockout file %s is unreadable (%s): locking the door code for "
                    "%.0f s to be safe", self.folder / FILE_NAME, found.problem, self.lockout)
        return LockoutState((), now + self.lockout)

    def keep(self, state: LockoutState) -> None:
        if self._kept is None or state == self._kept:  # not started yet, or nothing new
            return
        try:
            save(self.folder, state)
            self._kept = state
        except OSError as exc:
            log.error("cannot keep the door-code lockout in %s: %s (a restart would reset "
                      "it)", self.folder, exc.strerror or exc)
