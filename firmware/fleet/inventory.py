"""The inventory: one CSV or YAML file, one row per box -> checked ``Box`` records.

Owns the columns (mac, name, extension, buttons, door_code, and the optional profile,
transport, extra), MAC normalisation, and every row error: one line naming file:line and the
column. Reads nothing but the inventory, the board profiles (through firmware.config) and the
extension numbers the PBX's shipped configuration already uses. Knows nothing about passwords
or the files written.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_profile, normalise_mac, read_yaml
from ..sip.transport import TRANSPORTS
from ..supervisor import Action

COLUMNS = ("mac", "name", "extension", "buttons", "door_code", "profile", "transport", "extra")
REQUIRED = ("mac", "name", "extension", "buttons")
# door codes shorter than this are refused, shorter than GOOD_CODE warned about: at the box's
# default lockout (5 wrong codes per 5 minutes, ~1,440 guesses a day) a 4-digit code falls in
# 3-4 days on average, a 6-digit one in about a year (README, Security)
MIN_CODE = 4
GOOD_CODE = 6
NO_CODE = ("-", "none")  # the door_code cell that means: this box opens the door by no code
# keys the inventory's own columns set: `extra` may not override them (nor point the box at
# another provisioning server)
OWNED = {"sip.server", "sip.port", "sip.username", "sip.password", "sip.auth_username",
         "sip.transport", "sip.display_name", "calls.door_code", "calls.default_target",
         "gpio.profile", "gpio.buttons", "system.hostname"}
FORBIDDEN_SECTIONS = {"provisioning"}
_EXTENSION = re.compile(r"[0-9]{2,10}")
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 ._-]{0,61}[A-Za-z0-9])?")
_BUTTON = re.compile(r"([a-z][a-z0-9_]{0,30})(?:@([0-9]{1,2}))?")
_DTMF = set("0123456789*#ABCD")


class InventoryError(Exception):
    """Every bad row of an inventory, one line each (file:line: column: what is wrong)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Button:
    """A call button: a button of the board profile (``pin`` None) or a new one on ``pin``."""

    name: str
    target: str
    pin: int | None = None


@dataclass(frozen=True)
class Box:
    mac: str  # 12 lowercase hex digits
    name: str
    hostname: str
    extension: str
    buttons: tuple[Button, ...]
    door_code: str | None = field(repr=False)  # None: generate one; "": no door code
    profile: str = "plain"
    transport: str = "udp"
    extra: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    where: str = ""  # file:line of the row


@dataclass
class Inventory:
    boxes: list[Box]
    warnings: list[str]


@dataclass(frozen=True)
class PbxNumbers:
    """The numbers the PBX's own configuration uses: PJSIP endpoints (numeric sections of
    pjsip.conf) and extensions its dial plan routes (``exten =>`` in extensions.conf)."""

    endpoints: frozenset[str] = frozenset()
    routed: frozenset[str] = frozenset()

    @property
    def used(self) -> frozenset[str]:
        return self.endpoints | self.routed


def pbx_numbers(pbx_dir: Path | None) -> PbxNumbers:
    """What ``pbx_dir`` (the repository's pbx/, or /etc/asterisk) already uses: 5001
    reception, 5002-5004, 600 the echo test in the shipped configuration."""
    if pbx_dir is None:
        return PbxNumbers()

    def scan(name: str, pattern: str) -> frozenset[str]:
        f = pbx_dir / name
        return frozenset(re.findall(pattern, f.read_text(errors="replace"))) \
            if f.is_file() else frozenset()

    return PbxNumbers(scan("pjsip.conf", r"(?m)^\[([0-9]+)\]"),
                      scan("extensions.conf", r"(?m)^\s*exten\s*=>\s*([0-9]+)\s*,"))


def hostname_of(name: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[ ._]", "-", name.lower())).strip("-")


# ----------------------------------------------------------------------------- reading
def read_inventory(path: Path, reserved: Iterable[str] = ()) -> Inventory:
    """All boxes of the inventory, or InventoryError listing every bad row."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError([f"{path}: cannot read the inventory: "
                              f"{getattr(exc, 'strerror', None) or exc}"]) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        rows = _yaml_rows(text, str(path))
    elif path.suffix.lower() == ".csv":
        rows = _csv_rows(text, str(path))
    else:
        raise InventoryError([f"{path}: the inventory must be a .csv or .yaml file"])
    return check_rows(rows, set(reserved))


@dataclass
class Row:
    """One raw row: cells by column, where the row is, and where each cell is."""

    cells: dict[str, Any]
    where: str
    cell_where: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def at(self, column: str) -> str:
        return self.cell_where.get(column, self.where)


def _csv_rows(text: str, path: str) -> list[Row]:
    lines = [ln for ln in io.StringIO(text)]
    reader = csv.reader(lines)
    rows: list[Row] = []
    header: list[str] | None = None
    for cells in reader:
        line = reader.line_num
        if not cells or not "".join(cells).strip() or cells[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in cells]
        if header is None:
            header = [c.lower() for c in cells]
            unknown = [c for c in header if c not in COLUMNS]
            missing = [c for c in REQUIRED if c not in header]
            dup = sorted({c for c in header if header.count(c) > 1})
            problems = ([f"unknown column {c!r} (columns: {', '.join(COLUMNS)})"
                         for c in unknown] + [f"missing column {c!r}" for c in missing]
                        + [f"column {c!r} twice" for c in dup])
            if problems:
                raise InventoryError([f"{path}:{line}: header: {p}" for p in problems])
            continue
        row = Row({}, f"{path}:{line}")
        if len(cells) > len(header):
            row.errors.append(f"{row.where}: {len(cells)} cells for {len(header)} columns "
                              "(a comma inside a cell needs quotes)")
        row.cells = {c: v for c, v in zip(header, cells, strict=False) if v != ""}
        if "buttons" in row.cells:
            row.cells["buttons"] = _csv_pairs(row, "buttons", row.cells["buttons"])
        if "extra" in row.cells:
            row.cells["extra"] = _csv_extra(row, row.cells["extra"])
        rows.append(row)
    if header is None:
        raise InventoryError([f"{path}: empty inventory (a header line "
                              f"{','.join(COLUMNS[:5])} and one line per box)"])
    return rows


def _csv_pairs(row: Row, column: str, cell: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in cell.split():
        name, eq, value = item.partition("=")
        if not eq or not name or not value:
            row.errors.append(f"{row.at(column)}: {column}: {item!r} is not NAME=VALUE "
                              "(e.g. call=5101 flat2@24=5102)")
        elif name in pairs:
            row.errors.append(f"{row.at(column)}: {column}: {name!r} given twice")
        else:
            pairs[name] = value
    return pairs


def _csv_extra(row: Row, cell: str) -> dict[str, dict[str, Any]]:
    """``section.key=value ...``; each value read as YAML (true, 30, "text")."""
    extra: dict[str, dict[str, Any]] = {}
    for name, value in _csv_pairs(row, "extra", cell).items():
        section, dot, key = name.partition(".")
        if not dot or not key:
            row.errors.append(f"{row.where}: extra: {name!r} must be section.key=value")
            continue
        try:
            extra.setdefault(section, {})[key] = read_yaml(value, "extra")[0]
        except ConfigError as exc:
            row.errors.append(f"{row.where}: extra: {name}: {exc}")
    return extra


def _yaml_rows(text: str, path: str) -> list[Row]:
    try:
        data, lines = read_yaml(text, path)
    except ConfigError as exc:
        raise InventoryError([str(exc)]) from None
    if not isinstance(data, dict) or not isinstance(data.get("boxes"), list) \
            or set(data) - {"boxes"}:
        raise InventoryError([f"{path}: the inventory must be a mapping with one key, boxes: "
                              "a list of boxes (mac, name, extension, buttons, door_code)"])
    rows: list[Row] = []
    for i, item in enumerate(data["boxes"]):
        where = f"{path}:{lines.get(f'boxes.{i}', '?')}"
        if not isinstance(item, dict):
            rows.append(Row({}, where, errors=[f"{where}: a box must be a mapping"]))
            continue
        row = Row({}, where, {str(k): f"{path}:{lines.get(f'boxes.{i}.{k}', '?')}"
                              for k in item})
        for key, value in item.items():
            key = str(key)
            if key not in COLUMNS:
                row.errors.append(f"{row.at(key)}: unknown key {key!r} "
                                  f"(keys: {', '.join(COLUMNS)})")
            elif value is not None:
                row.cells[key] = value
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- checking
def check_rows(rows: list[Row], reserved: set[str]) -> Inventory:
    boxes: list[Box] = []
    errors: list[str] = []
    warnings: list[str] = []
    seen: dict[str, dict[str, str]] = {"mac": {}, "name": {}, "hostname": {}, "extension": {}}
    for row in rows:
        box = _check(row, reserved, warnings)
        errors += row.errors
        if box is None:
            continue
        for column, value in (("mac", box.mac), ("name", box.name.lower()),
                              ("hostname", box.hostname), ("extension", box.extension)):
            first = seen[column].get(value)
            if first:
                shown = "name" if column == "hostname" else column
                errors.append(f"{row.at(shown)}: {shown}: duplicate {getattr(box, shown)!r} "
                              f"(already at {first})")
            else:
                seen[column][value] = row.where
        boxes.append(box)
    if errors:
        raise InventoryError(errors)
    if not boxes:
        raise InventoryError([f"{rows[0].where.rsplit(':', 1)[0] if rows else 'inventory'}: "
                              "no boxes"])
    return Inventory(boxes, warnings)


def _text(row: Row, column: str, value: Any, numbers: bool = True) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int) if numbers else str):
        row.errors.append(f"{row.at(column)}: {column}: must be "
                          f"{'text or a number' if numbers else 'quoted text'}, "
                          f"got {type(value).__name__}")
        return None
    return str(value).strip()


def _check(row: Row, reserved: set[str], warnings: list[str]) -> Box | None:
    c = row.cells
    for column in REQUIRED:
        if column not in c:
            row.errors.append(f"{row.at(column)}: {column}: missing")
    if row.errors:
        return None
    bad = len(row.errors)
    mac_text = _text(row, "mac", c["mac"], numbers=False)
    if isinstance(c["mac"], int):  # YAML 1.1 reads 00:11:22:33:44:55 as a number
        row.errors[-1] += " (put the MAC in quotes)"
    mac = normalise_mac(mac_text) if mac_text is not None else None
    if mac_text is not None and mac is None:
        row.errors.append(f"{row.at('mac')}: mac: {mac_text!r} is not a box's Ethernet MAC "
                          "(12 hex digits, e.g. b8:27:eb:12:34:56; not multicast, not zero)")
    name = _text(row, "name", c["name"], numbers=False)
    if name is not None and (not _NAME.fullmatch(name) or not hostname_of(name)):
        row.errors.append(f"{row.at('name')}: name: {name!r} must be 1-63 letters, digits, "
                          "spaces, '.', '_' or '-' (it becomes the box's host name)")
    extension = _text(row, "extension", c["extension"])
    if extension is not None:
        if not _EXTENSION.fullmatch(extension):
            row.errors.append(f"{row.at('extension')}: extension: {extension!r} must be "
                              "2-10 digits")
        elif extension in reserved:
            row.errors.append(f"{row.at('extension')}: extension: {extension} is already used "
                              "by the PBX's own configuration (pbx/: reception, test users, "
                              "echo test)")
    profile = _text(row, "profile", c.get("profile", "plain"), numbers=False) or "plain"
    transport = _text(row, "transport", c.get("transport", "udp"), numbers=False) or "udp"
    if transport not in TRANSPORTS:
        row.errors.append(f"{row.at('transport')}: transport: {transport!r} must be one of "
                          f"{', '.join(TRANSPORTS)}")
    buttons = _buttons(row, c["buttons"], profile)
    door_code = _door_code(row, c.get("door_code"), warnings)
    extra = _extra(row, c.get("extra", {}))
    if len(row.errors) > bad or mac is None or name is None or extension is None:
        return None
    return Box(mac=mac, name=name, hostname=hostname_of(name), extension=extension,
               buttons=buttons, door_code=door_code, profile=profile, transport=transport,
               extra=extra, where=row.where)


def _buttons(row: Row, raw: Any, profile_name: str) -> tuple[Button, ...]:
    at = row.at("buttons")
    if not isinstance(raw, dict) or not raw:
        row.errors.append(f"{at}: buttons: must name at least one call button and its target "
                          "(CSV: call=5101 flat2@24=5102; YAML: a mapping)")
        return ()
    try:
        profile = load_profile(profile_name)
    except ConfigError as exc:
        row.errors.append(f"{row.at('profile')}: profile: {exc}")
        return ()
    callers = {str(n): b for n, b in (profile.get("buttons") or {}).items()
               if isinstance(b, dict) and str(b.get("action", "call")) in
               (Action.CALL, Action.TALK)}
    buttons: list[Button] = []
    pins: dict[int, str] = {}
    for key, value in raw.items():
        pin: int | None = None
        if isinstance(value, dict):  # YAML: flat2: {pin: 24, target: 5102}
            unknown = set(value) - {"pin", "target"}
            if unknown or "target" not in value:
                row.errors.append(f"{at}: buttons: {key}: a mapping takes target (and pin) "
                                  "only")
                continue
            if not isinstance(value.get("pin", 0), int) or isinstance(value.get("pin"), bool):
                row.errors.append(f"{at}: buttons: {key}: pin must be a BCM GPIO number")
                continue
            pin, value = value.get("pin"), value["target"]
        m = _BUTTON.fullmatch(str(key))
        if m is None:
            row.errors.append(f"{at}: buttons: {str(key)!r} is not a button name (lowercase "
                              "letters, digits, '_'; NAME@PIN for a button the profile lacks)")
            continue
        name = m.group(1)
        if m.group(2) is not None:
            if pin is not None:
                row.errors.append(f"{at}: buttons: {key}: the pin is given twice")
                continue
            pin = int(m.group(2))
        target = _text(row, "buttons", value)
        if target is None:
            continue
        if not _EXTENSION.fullmatch(target):
            row.errors.append(f"{at}: buttons: {name}: target {target!r} must be an extension "
                              "(2-10 digits)")
            continue
        if pin is None and name not in callers:
            known = ", ".join(sorted(callers)) or "none"
            row.errors.append(f"{at}: buttons: unknown button {name!r}: profile "
                              f"{profile_name!r} has the call buttons {known}; a new button "
                              f"needs its pin: {name}@PIN={target}")
            continue
        if pin is not None:
            if not 0 <= pin <= 53:
                row.errors.append(f"{at}: buttons: {name}: pin {pin} is not a BCM GPIO "
                                  "number 0..53")
                continue
            if pin in pins:
                row.errors.append(f"{at}: buttons: {name} and {pins[pin]} share pin {pin}")
                continue
            pins[pin] = name
        if any(b.name == name for b in buttons):
            row.errors.append(f"{at}: buttons: {name!r} given twice")
            continue
        buttons.append(Button(name, target, pin))
    return tuple(buttons)


def _door_code(row: Row, raw: Any, warnings: list[str]) -> str | None:
    if raw is None:
        return None  # generated, kept in secrets.yaml
    at = row.at("door_code")
    if not isinstance(raw, str):  # YAML reads 0123 as 83 (octal): the code must be text
        row.errors.append(f"{at}: door_code: must be quoted text (YAML reads a number such as "
                          "0123 as another number), e.g. \"13572468\"")
        return None
    code = raw.strip()
    if code.lower() in NO_CODE:
        return ""
    if not code or not set(code.upper()) <= _DTMF:
        row.errors.append(f"{at}: door_code: may only hold the DTMF keys 0-9 * # A-D "
                          f"(leave it empty to generate one, '-' for none)")
        return None
    if len(code) < MIN_CODE:
        row.errors.append(f"{at}: door_code: {len(code)} keys is too short (at least "
                          f"{MIN_CODE}, better 8: at 5 guesses per 5 minutes a 4-key code falls "
                          "in 3-4 days, a 6-key one in about a year; README, Security)")
        return None
    if len(code) < GOOD_CODE:
        warnings.append(f"{at}: door_code: {len(code)} keys fall to guessing in days (5 guesses "
                        "per 5 minutes, ~1,440 a day); use 6 or more, or leave it empty to "
                        "have an 8-digit one generated")
    return code.upper()


def _extra(row: Row, raw: Any) -> dict[str, dict[str, Any]]:
    at = row.at("extra")
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        row.errors.append(f"{at}: extra: must map sections to keys (CSV: audio.capture=usb "
                          "calls.auto_answer=true)")
        return {}
    for section, keys in raw.items():
        if section in FORBIDDEN_SECTIONS:
            row.errors.append(f"{at}: extra: {section} is set on the box's boot partition only")
        for key in keys:
            if f"{section}.{key}" in OWNED:
                row.errors.append(f"{at}: extra: {section}.{key} comes from the inventory's "
                                  "own columns or the command line, not from extra")
    return {str(s): dict(k) for s, k in raw.items()}
