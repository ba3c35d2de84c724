"""The fleet's generated secrets: SIP passwords (and door codes the inventory left empty),
by MAC, kept in ``<out>/secrets.yaml`` (mode 0600) so that a re-run keeps them.

Owns generating (the ``secrets`` module: 192-bit passwords, 8-digit door codes), reading back
with clear errors, writing atomically with mode 0600, and never forgetting: entries of boxes
that left the inventory stay. Knows nothing about the inventory's columns or Asterisk.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, read_yaml
from .inventory import normalise_mac

PASSWORD_BYTES = 24  # 192 bits, 32 characters of [A-Za-z0-9_-]
CODE_DIGITS = 8
# what may stand in pjsip.conf and YAML without quoting trouble: no ';' (a comment), no space
_SAFE_PASSWORD = re.compile(r"[A-Za-z0-9_\-+/=.,:@%!~^]{16,128}")
_CODE = re.compile(r"[0-9*#A-D]{4,32}")


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def new_door_code() -> str:
    return "".join(str(secrets.randbelow(10)) for _ in range(CODE_DIGITS))


@dataclass
class Secret:
    sip_password: str = field(repr=False)
    door_code: str | None = field(default=None, repr=False)  # only when generated


@dataclass
class SecretStore:
    """MAC -> Secret; ``created`` lists the MACs given a new password in this run."""

    path: Path
    entries: dict[str, Secret] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    def password(self, mac: str) -> str:
        entry = self.entries.get(mac)
        if entry is None:
            entry = self.entries[mac] = Secret(new_password())
            self.created.append(mac)
        return entry.sip_password

    def generated_door_code(self, mac: str) -> str:
        """The door code generated for this box (made now if it has none yet)."""
        self.password(mac)
        entry = self.entries[mac]
        if entry.door_code is None:
            entry.door_code = new_door_code()
        return entry.door_code

    def text(self) -> str:
        out = ["# intercom-fleet secrets: each box's SIP password (and the door code generated",
               "# when the inventory left it empty), by MAC. Keep this file (mode 0600) and back",
               "# it up: a re-run keeps these passwords. Entries of boxes that left the",
               "# inventory stay; delete an entry by hand to have a new password generated.",
               "boxes:"]
        for mac in sorted(self.entries):
            entry = self.entries[mac]
            out.append(f"  \"{mac}\":")
            out.append(f"    sip_password: {json.dumps(entry.sip_password)}")
            if entry.door_code is not None:
                out.append(f"    door_code: {json.dumps(entry.door_code)}")
        return "\n".join(out) + "\n"

    def save(self) -> None:
        write_private(self.path, self.text())


def load(path: Path) -> SecretStore:
    """The store at ``path`` (empty when the file does not exist yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return SecretStore(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the secrets: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    data, lines = read_yaml(text, str(path))
    if data is None:
        return SecretStore(path)
    if not isinstance(data, dict) or not isinstance(data.get("boxes") or {}, dict):
        raise ConfigError(f"{path}: must be a mapping with boxes: MAC -> sip_password")
    store = SecretStore(path)
    for raw_mac, entry in (data.get("boxes") or {}).items():
        where = f"{path}:{lines.get(f'boxes.{raw_mac}', '?')}"
        mac = normalise_mac(str(raw_mac))
        if mac is None or not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a MAC with sip_password (and door_code)")
        password, code = entry.get("sip_password"), entry.get("door_code")
        if not isinstance(password, str) or not _SAFE_PASSWORD.fullmatch(password):
            raise ConfigError(f"{where}: sip_password must be 16-128 characters without spaces "
                              "or ';' (delete the entry to have one generated)")
        if code is not None and (not isinstance(code, str) or not _CODE.fullmatch(code)):
            raise ConfigError(f"{where}: door_code must be quoted DTMF keys 0-9 * # A-D")
        store.entries[mac] = Secret(password, code)
    return store


def write_private(path: Path, text: str | bytes, mode: int = 0o600) -> None:
    """Write atomically (a temporary file in the same folder, fsync, rename) with ``mode`` from
    the first byte: the secret is never readable by others, even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
