"""The import direction of DESIGN.md, checked by walking every module's imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "firmware"
IO_MODULES = {"asyncio", "socket", "time", "yaml", "gpiozero", "alsaaudio", "select",
              "threading", "subprocess"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module)
            elif node.level > 0:
                rel = path.relative_to(PKG.parent).with_suffix("").parts[:-node.level]
                base = ".".join(rel)
                found.add(f"{base}.{node.module}" if node.module else base)
    return found


def test_sip_core_is_sans_io() -> None:
    for path in (PKG / "sip").glob("*.py"):
        imported = imports_of(path)
        bad = {m for m in imported if m.split(".")[0] in IO_MODULES}
        assert not bad, f"{path.name} imports {bad}"
        inner = {m for m in imported if m.startswith("firmware.")}
        allowed = {m for m in inner if m.startswith("firmware.sip")
                   or m in ("firmware.events", "firmware.address")}
        assert inner == allowed, f"{path.name} reaches outward: {inner - allowed}"


def test_supervisor_and_media_stay_in_their_lane() -> None:
    sup = imports_of(PKG / "supervisor.py")
    inner = {m for m in sup if m.startswith("firmware")}
    assert not inner, f"the supervisor is pure and imports nothing of ours: {inner}"
    assert not {m for m in sup if m.split(".")[0] in IO_MODULES}
    for path in (PKG / "media").glob("*.py"):
        imported = imports_of(path)
        bad = {m for m in imported if m.split(".")[0] in ("asyncio", "gpiozero", "yaml")
               or m.startswith(("firmware.sip", "firmware.app", "firmware.gpio"))}
        assert not bad, f"{path.name} imports {bad}"
    gpio = imports_of(PKG / "gpio.py")
    assert not {m for m in gpio if m.startswith(("firmware.sip", "firmware.media"))}


def test_events_and_config_are_innermost() -> None:
    """events.py imports nothing of ours; config.py only the pure tables it validates against
    (addresses, the transport table, the supervisor's button actions), and nothing compiled."""
    inner = {m for m in imports_of(PKG / "events.py") if m.startswith("firmware")}
    assert inner <= {"firmware.address"}, f"events.py imports {inner}"
    inner = {m for m in imports_of(PKG / "config.py") if m.startswith("firmware")}
    assert inner <= {"firmware.address", "firmware.sip.transport", "firmware.supervisor"}, \
        f"config.py imports {inner}"
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, firmware.config; print(*sorted(m for m, mod in "
         "sys.modules.items() if m.startswith('firmware') and "
         "not str(getattr(mod, '__file__', '')).endswith('.py')))"],
        cwd=PKG.parent, capture_output=True, text=True, check=True).stdout.split()
    assert not loaded, f"importing firmware.config loads compiled modules: {loaded}"


def test_the_address_parser_is_the_innermost_module() -> None:
    """SIP, SDP, the media core and the configuration share one address parser: it may
    import nothing from the firmware and no I/O, so every layer can use it."""
    imported = imports_of(PKG / "address.py")
    assert not {m for m in imported if m.startswith("firmware")}, imported
    assert not {m for m in imported if m.split(".")[0] in IO_MODULES}, imported
    users = {p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")
             if "firmware.address" in imports_of(p)}
    assert {"sip/sdp.py", "sip/uri.py", "media/stream.py"} <= users, users
    assert "from firmware.address import" in (PKG / "_rtpcore.pyx").read_text()


def test_only_config_imports_yaml() -> None:
    for path in PKG.rglob("*.py"):
        if path.name != "config.py":
            assert "yaml" not in imports_of(path), path


def test_every_module_has_a_docstring() -> None:
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path} has no module docstring"
