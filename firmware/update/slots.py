"""The box's two root slots as the updater and ``status`` see them.

Owns where each fact comes from: the booted slot from ``rauc.slot=A|B`` on the kernel command
line (U-Boot's boot script sets it), the booted slot's version from ``/etc/intercom-version``,
the other slot's version from RAUC's status file (``central.raucs`` in the ``data-directory`` of
``/etc/rauc/system.conf``; "unknown" when RAUC never installed it), and the ``update`` part of
``status`` (these plus the state file). Read-only and never raising: a missing or odd file is
"unknown". Knows nothing about HTTP, the intercom or how a bundle is checked.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..lockout_store import boot_id
from .state import Store, one_line

UNKNOWN = "unknown"
SLOTS = ("A", "B")


@dataclass(frozen=True)
class SlotPaths:
    """Where the facts live on the box (tests point them into a temporary folder)."""

    cmdline: Path = Path("/proc/cmdline")
    version: Path = Path("/etc/intercom-version")
    system_conf: Path = Path("/etc/rauc/system.conf")
    rauc_status: Path | None = None  # None: from system.conf (data-directory/central.raucs)


def _small(path: Path, limit: int = 65536) -> str | None:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit:
        return None
    return data.decode("utf-8", "replace")


def booted_slot(paths: SlotPaths = SlotPaths()) -> str | None:
    """"A" or "B" from the kernel command line, None when not booted through the A/B script."""
    text = _small(paths.cmdline) or ""
    found = re.findall(r"(?:^|\s)rauc\.slot=(\S+)", text)
    return found[-1] if found and found[-1] in SLOTS else None


def other(slot: str) -> str:
    return "B" if slot == "A" else "A"


def installed_version(paths: SlotPaths = SlotPaths()) -> str:
    """The running release (the root's /etc/intercom-version), or "unknown"."""
    text = (_small(paths.version, 256) or "").strip()
    return one_line(text, 64) if text and "\n" not in text else UNKNOWN


def _keyfile(text: str | None) -> configparser.RawConfigParser | None:
    if text is None:
        return None
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    return parser


def _status_file(paths: SlotPaths) -> Path:
    if paths.rauc_status is not None:
        return paths.rauc_status
    conf = _keyfile(_small(paths.system_conf))
    folder = "/data/rauc"
    if conf is not None and conf.has_section("system"):
        statusfile = conf.get("system", "statusfile", fallback="")
        if statusfile and statusfile != "per-slot":
            return Path(statusfile)
        folder = conf.get("system", "data-directory", fallback=folder) or folder
    return Path(folder) / "central.raucs"


def bootnames(paths: SlotPaths = SlotPaths()) -> dict[str, str]:
    """RAUC slot name (``rootfs.1``) -> boot name (``B``), from system.conf."""
    names = {"rootfs.0": "A", "rootfs.1": "B"}
    conf = _keyfile(_small(paths.system_conf))
    if conf is not None:
        for section in conf.sections():
            if section.startswith("slot.") and conf.has_option(section, "bootname"):
                names[section[len("slot."):]] = conf.get(section, "bootname")
    return names


def rauc_versions(paths: SlotPaths = SlotPaths()) -> dict[str, str]:
    """Boot name -> the version of the bundle RAUC last wrote there (central.raucs)."""
    status = _keyfile(_small(_status_file(paths)))
    found: dict[str, str] = {}
    if status is None:
        return found
    names = bootnames(paths)
    for section in status.sections():
        name = names.get(section[len("slot."):]) if section.startswith("slot.") else None
        version = status.get(section, "bundle.version", fallback="").strip()
        if name in SLOTS and version:
            found[name] = one_line(version, 64)
    return found


def versions(paths: SlotPaths = SlotPaths()) -> dict[str, str]:
    """Both slots' versions: the booted one from its own root, the other from RAUC."""
    booted = booted_slot(paths)
    known = rauc_versions(paths)
    out = {s: known.get(s, UNKNOWN) for s in SLOTS}
    if booted is not None:
        out[booted] = installed_version(paths)
    return out


def report(state_dir: str | Path, paths: SlotPaths = SlotPaths()) -> dict[str, Any]:
    """The ``update`` part of ``status`` (no URL, no secret: the state file holds none)."""
    state = Store(state_dir).read()
    booted = booted_slot(paths)
    pending = state["pending_reboot"]
    if pending and pending["boot_id"] and pending["boot_id"] != boot_id():
        pending = None  # the reboot it waited for has happened
    return {"booted_slot": booted,
            "installed": installed_version(paths),
            "slots": versions(paths) if booted else {},
            "last": state["last"],
            "pending_reboot": pending,
            "checked_at": state["checked_at"]}
