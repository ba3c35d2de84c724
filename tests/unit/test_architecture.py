"""The firmware's layers, checked by walking every module's imports. The rules, in full:

- Imports point inward: ``cli`` -> ``app`` -> {``net``, ``gpio``, ``control``, ``media``,
  ``parts``} -> {``supervisor``, ``sip``, the media core} -> {``events``, ``config``} ->
  ``address``.
- ``sip/`` is sans-I/O: no ``asyncio``, ``socket``, ``time``, ``select``, ``threading``,
  ``subprocess``, ``yaml``, ``gpiozero`` or ``alsaaudio``; from the firmware it reaches only
  ``sip.*``, ``events`` and ``address`` (time comes in as ``now``).
- The supervisor is a pure state machine: no I/O module, and from the firmware only
  ``config`` (for the button actions a configuration names).
- ``media/`` never imports ``asyncio``, ``gpiozero``, ``yaml``, ``sip``, ``app`` or ``gpio``;
  ``gpio`` never imports ``sip`` or ``media``: sip, media and supervisor never import each
  other.
- ``events`` and ``config`` are innermost (``address`` only); ``address`` imports nothing of
  the firmware and no I/O, so every layer (SIP, SDP, the media core, config) shares it.
- ``config`` is the only module that imports ``yaml``.
- Every module has a docstring saying what it owns.
- The compiled media core (``firmware/core/``) reaches only its own units, the C library and
  CPython; the only Python modules that import it are the media path's (``media/``,
  ``parts``' real media part) and the CLI's report of what the build has; its I/O shell
  ``_rtpcore.pyx`` stays at the package's top, where the design card puts it.
- Everything but the media core imports without the C build: the Cython extensions are
  loaded only when a real media part is used (``firmware.parts``), so the pure layers and
  the fakes they are tested on run on a machine without a compiler.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests import compiled

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


CORE_CIMPORT = re.compile(r"^\s*(?:from\s+(\S+)\s+c?import|c?import\s+(\S+))", re.M)
CORE_USERS = {"media/stream.py", "media/_reference.py", "media/settings.py", "parts.py", "cli.py"}


def test_the_compiled_core_is_a_closed_layer() -> None:
    """firmware/core/ holds every Cython unit but the I/O shell; its units import only each
    other, libc/posix/CPython (and typing in stubs), and only the media path imports them."""
    core = PKG / "core"
    units = sorted(p.stem for p in core.glob("*.pyx"))
    assert {"_g711", "_mediacore", "_aec", "_srtp"} <= set(units), units
    assert [p.name for p in PKG.glob("*.pyx")] == ["_rtpcore.pyx"], "only the shell stays up"
    for path in [*core.glob("*.pyx"), *core.glob("*.pxd"), *core.glob("*.pyi")]:
        for match in CORE_CIMPORT.finditer(path.read_text()):
            name = (match.group(1) or match.group(2)).rstrip(",")
            top = name.split(".")[0]
            assert name.startswith(("firmware.core.", ".")) or top in (
                "libc", "posix", "cpython", "typing", "typing_extensions", "collections"), \
                f"{path.name} imports {name}"
    users = {p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")
             if "core" not in p.relative_to(PKG).parts
             and any(m.startswith("firmware.core") for m in imports_of(p))}
    assert users <= CORE_USERS, f"outside the media path: {users - CORE_USERS}"
    assert "from firmware.core." in (PKG / "_rtpcore.pyx").read_text()


def test_tests_start_event_loops_through_run_apart() -> None:
    """In the whole suite the browser tests' Playwright keeps an event loop marked as running in
    the main thread, where ``asyncio.run`` refuses to start: a test that calls it passes alone
    and fails in ``./build.sh test`` (seen: tests/unit/test_resolver.py). Tests go through
    ``devtools.waiting.run_apart`` (a thread of its own), or start a thread themselves."""
    tests = PKG.parent / "tests"
    offenders = [f"{p.relative_to(tests)}:{n}" for p in tests.rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if "asyncio.run(" in line and "threading.Thread" not in line]
    assert not offenders, f"asyncio.run in a test's own thread: {offenders}"


def test_only_config_imports_yaml() -> None:
    for path in PKG.rglob("*.py"):
        if path.name != "config.py":
            assert "yaml" not in imports_of(path), path


def test_every_module_has_a_docstring() -> None:
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path} has no module docstring"


PURE = ["firmware.address", "firmware.events", "firmware.config", "firmware.supervisor",
        "firmware.parts", "firmware.app", "firmware.startup", "firmware.runner",
        "firmware.status", "firmware.commands", "firmware.media_control", "firmware.outbound",
        "firmware.cli", "firmware.net", "firmware.gpio",
        "firmware.control", "firmware.media.audio", "firmware.media.settings",
        "firmware.media._reference", "firmware.provisioning", "firmware.update.health",
        "firmware.outbound.chronicle", "firmware.outbound.mqtt", "firmware.outbound.webhook",
        "firmware.outbound.links", "devtools.box.fakes", "devtools.box.config"]
REFUSE_BUILD = compiled.REFUSE_BUILD + """
for name in sys.argv[2:]:
    importlib.import_module(name)
loaded = REFUSED & set(sys.modules)
assert not loaded, loaded
"""


def test_the_pure_layers_import_without_the_compiled_core() -> None:
    """With every Cython extension refused, the configuration, the supervisor, each SIP
    module, the application with its parts, the CLI and the fakes the unit tests run App on
    all import: only using a real media part needs the build."""
    sip = sorted(f"firmware.sip.{p.stem}" for p in (PKG / "sip").glob("*.py"))
    names = compiled.extensions()
    assert names, "no .pyx found under firmware/"
    r = subprocess.run([sys.executable, "-c", REFUSE_BUILD, ",".join(names), *PURE, *sip],
                       cwd=PKG.parent, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
