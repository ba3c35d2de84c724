"""Which tests need the compiled media core, and what happens when it is not built.

The Cython extensions (every ``.pyx`` under ``firmware/``, found by walking the folder so that
moving them into a subpackage changes nothing here) are what ``python setup.py build_ext
--inplace`` or ``pip install .`` builds. A test that needs them says so: a module that imports
them at the top calls ``pytest.importorskip(NAME, reason=REASON)`` before that import and sets
``pytestmark = pytest.mark.compiled``; a single test takes ``@pytest.mark.compiled``.

Without the build those tests are skipped with the reason, so a contributor with only
``pip install pyyaml gpiozero pytest`` runs every other test. With ``INTERCOM_REQUIRE_BUILD=1``
(``./build.sh test`` and CI set it) a missing or broken extension stops the run before any
test, naming it: a build that silently skipped half the suite would pass unnoticed.

Imports nothing compiled itself, and nothing from the firmware.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
REQUIRE = "INTERCOM_REQUIRE_BUILD"
# the head of a ``python -c`` script that refuses the modules named (comma-separated) in
# sys.argv[1], as on a machine without the C build; the caller's script goes on from there
REFUSE_BUILD = """
import importlib, importlib.abc, sys
REFUSED = set(sys.argv[1].split(","))
class NoBuild(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in REFUSED:
            raise ModuleNotFoundError(f"No module named {name!r} (refused: no C build)")
        return None
sys.meta_path.insert(0, NoBuild())
"""
REASON = ("needs the compiled media core (Cython extensions): "
          "python setup.py build_ext --inplace, or ./build.sh test")


def extensions() -> list[str]:
    """The dotted names of every Cython extension of the firmware, sorted."""
    root = FIRMWARE.parent
    return sorted(".".join(p.relative_to(root).with_suffix("").parts)
                  for p in FIRMWARE.rglob("*.pyx"))


def missing() -> dict[str, str]:
    """Extension name -> why it does not import (empty when the whole build is there)."""
    out: dict[str, str] = {}
    for name in extensions():
        try:
            importlib.import_module(name)
        except ImportError as exc:
            out[name] = str(exc)
    return out


def required() -> bool:
    """Whether this run must have the build (``INTERCOM_REQUIRE_BUILD`` set and not 0)."""
    return os.environ.get(REQUIRE, "0") not in ("", "0")


# what the test extras (``pip install .[test]``) bring that some tests cannot do without; the
# same rule holds: skipped with this reason, a failure with INTERCOM_REQUIRE_BUILD=1
EXTRAS = ("numpy", "hypothesis", "cryptography", "gpiod", "mypy")
EXTRAS_REASON = "needs the test extras: pip install -e .[test]"


def missing_extras() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in EXTRAS:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            out[name] = str(exc)
    return out
