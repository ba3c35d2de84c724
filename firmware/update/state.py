"""The updater's record in /data/update: ``state.json`` and ``trial.json``.

Owns the two files' schema, their atomic replacement by root processes (a temporary file,
fsync, rename, fsync of the folder, all under an fcntl lock on ``.lock``) and readers that never
raise: a missing file reads as "nothing yet" (``none``), a corrupt one as ``unknown``.

``state.json`` (mode 0644: the intercom service, user ``intercom``, reads it for ``status``)::

    {"last": {"result": "ok|installed|refused|failed|rolled_back|none", "reason": "<code>",
              "version": "...", "at": <unix time>, "message": "<one line>",
              "acknowledged": false},
     "pending_reboot": {"slot": "B", "version": "...", "auto": true, "boot_id": "..."} | null,
     "refused_versions": ["..."], "checked_at": <unix time> | null,
     "source": {"url": "<sha256 of update.url>", "etag": "...", "last_modified": "...",
                "version": "...", "refused": "<reason code>|"} | null}

(``source``: what the pull URL served last and what became of it, so an unchanged bundle is
not fetched again once it runs here or was refused for good; clearing it makes the next check
download and judge the bundle anew.)

``trial.json`` (written after a successful install, read and cleared by the health check)::

    {"slot", "version", "from_slot", "from_version", "installed_at", "inconclusive": 0}

Knows nothing about RAUC, HTTP, the intercom or what a result means.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_DIR = "/data/update"
STATE = "state.json"
TRIAL = "trial.json"
LOCK = ".lock"
RESULTS = ("ok", "installed", "refused", "failed", "rolled_back", "none")
MAX_FILE = 64 * 1024  # a state file is a few hundred bytes; anything larger is not ours
MAX_REFUSED = 32  # the oldest refused versions are forgotten beyond this
_TRIAL_KEYS = ("slot", "version", "from_slot", "from_version", "installed_at", "inconclusive")


def one_line(text: object, limit: int = 300) -> str:
    """One printable line: what a status field or a log line may carry."""
    flat = " ".join(str(text).split())
    flat = "".join(c if c.isprintable() else "?" for c in flat)
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


class UpdateError(Exception):
    """An update step that did not happen: ``result`` "refused" (the bundle's fault) or
    "failed" (this box could not do it), ``reason`` a short code for ``status``, ``version``
    when known; ``str()`` is one line."""

    def __init__(self, reason: str, message: str, result: str = "refused",
                 version: str = "") -> None:
        super().__init__(one_line(message))
        self.reason = reason
        self.result = result
        self.version = version


def empty_state() -> dict[str, Any]:
    return {"last": {"result": "none", "reason": "", "version": "", "at": None, "message": "",
                     "acknowledged": False},
            "pending_reboot": None, "refused_versions": [], "checked_at": None, "source": None}


def _text(value: object) -> str:
    return one_line(value) if isinstance(value, str | int | float) and \
        not isinstance(value, bool) else ""


def _time(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def normalise(raw: object) -> dict[str, Any]:
    """Whatever JSON the file held -> the schema, field by field (a field of the wrong type is
    dropped, never trusted): a damaged file cannot make a reader crash or lie."""
    out = empty_state()
    if not isinstance(raw, dict):
        out["last"].update(result="unknown", message="the update state file is not an object")
        return out
    last = raw.get("last")
    if isinstance(last, dict):
        result = last.get("result")
        out["last"] = {"result": result if result in RESULTS else "unknown",
                       "reason": _text(last.get("reason")), "version": _text(last.get("version")),
                       "at": _time(last.get("at")), "message": _text(last.get("message")),
                       # a rollback seen by someone (intercom update --ack): the LED stops
                       "acknowledged": last.get("acknowledged") is True}
    pending = raw.get("pending_reboot")
    if isinstance(pending, dict) and pending.get("slot") in ("A", "B"):
        out["pending_reboot"] = {"slot": pending["slot"],
                                 "version": _text(pending.get("version")),
                                 "auto": pending.get("auto") is not False,
                                 "boot_id": _text(pending.get("boot_id"))}
    refused = raw.get("refused_versions")
    if isinstance(refused, list):
        out["refused_versions"] = [_text(v) for v in refused if _text(v)][-MAX_REFUSED:]
    out["checked_at"] = _time(raw.get("checked_at"))
    source = raw.get("source")
    if isinstance(source, dict):
        out["source"] = {k: _text(source.get(k))
                         for k in ("url", "etag", "last_modified", "version", "refused")}
    return out


def _read(path: Path) -> tuple[object | None, str | None]:
    """The decoded JSON, or (None, why) for a missing (why None) or unreadable file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {path.name}: {exc.strerror or exc}"
    try:  # a directory opens, and fails only here
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as exc:
        return None, f"cannot read {path.name}: {exc.strerror or exc}"
    if len(data) > MAX_FILE:
        return None, f"{path.name} is larger than {MAX_FILE} bytes"
    try:
        decoded = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None, f"{path.name} is not valid JSON"
    return (decoded, None) if decoded is not None else (None, f"{path.name} holds null")


def write_atomic(path: Path, body: bytes, mode: int) -> None:
    """Replace ``path`` with ``body``: a power cut leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Store:
    """/data/update (``update.state_dir``): read by anyone, written by root under the lock."""

    def __init__(self, folder: str | Path = DEFAULT_DIR) -> None:
        self.folder = Path(folder)

    # ------------------------------------------------------------------ readers (never raise)
    def read(self) -> dict[str, Any]:
        raw, why = _read(self.folder / STATE)
        if raw is None:
            state = empty_state()
            if why:
                state["last"].update(result="unknown", message=why)
            return state
        return normalise(raw)

    def read_trial(self) -> dict[str, Any] | None:
        """The trial record, or None when there is none or it makes no sense."""
        raw, _ = _read(self.folder / TRIAL)
        if not isinstance(raw, dict) or raw.get("slot") not in ("A", "B") \
                or raw.get("from_slot") not in ("A", "B"):
            return None
        inconclusive = raw.get("inconclusive")
        return {"slot": raw["slot"], "version": _text(raw.get("version")),
                "from_slot": raw["from_slot"], "from_version": _text(raw.get("from_version")),
                "installed_at": _time(raw.get("installed_at")),
                "inconclusive": inconclusive if isinstance(inconclusive, int)
                and not isinstance(inconclusive, bool) and inconclusive >= 0 else 0}

    # ------------------------------------------------------------------ writers (root)
    def _prepare(self) -> None:
        self.folder.mkdir(mode=0o755, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The one writer at a time (the updater, ``intercom update``, the health check)."""
        self._prepare()
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def modify(self) -> Iterator[dict[str, Any]]:
        """Read, let the caller change the dict, write it back atomically, under the lock."""
        with self.lock():
            state = self.read()
            if state["last"]["result"] == "unknown":  # a damaged file is replaced, not kept
                state["last"] = empty_state()["last"]
            yield state
            body = json.dumps(normalise(state), indent=1, sort_keys=True).encode() + b"\n"
            write_atomic(self.folder / STATE, body, 0o644)

    def record(self, result: str, reason: str = "", version: str = "", message: str = "",
               now: float | None = None) -> dict[str, Any]:
        """Set ``last``; returns the entry written."""
        if result not in RESULTS:
            raise ValueError(f"unknown update result {result!r}")
        entry = {"result": result, "reason": one_line(reason), "version": one_line(version),
                 "at": time.time() if now is None else now, "message": one_line(message),
                 "acknowledged": False}
        with self.modify() as state:
            state["last"] = entry
        return entry

    def refuse_version(self, version: str) -> None:
        """Never install ``version`` again (a failed trial): ``refused before``."""
        with self.modify() as state:
            if version and version not in state["refused_versions"]:
                state["refused_versions"].append(one_line(version))

    def write_trial(self, trial: dict[str, Any]) -> None:
        missing = [k for k in _TRIAL_KEYS if k not in trial]
        if missing:
            raise ValueError(f"a trial record needs {', '.join(missing)}")
        body = json.dumps({k: trial[k] for k in _TRIAL_KEYS}, sort_keys=True).encode() + b"\n"
        with self.lock():
            write_atomic(self.folder / TRIAL, body, 0o644)

    def clear_trial(self) -> None:
        with self.lock():
            with contextlib.suppress(FileNotFoundError):
                (self.folder / TRIAL).unlink()
            dfd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
