"""mypy on the package, and stubtest: the Cython modules' .pyi stubs match what was compiled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import compiled

REPO = Path(__file__).resolve().parents[2]
ALLOWLIST = Path(__file__).resolve().parent / "stubtest-allowlist.txt"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_mypy_on_firmware() -> None:
    pytest.importorskip("mypy", reason=compiled.EXTRAS_REASON)
    result = _run("mypy", "firmware")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.compiled
def test_stubtest_on_the_cython_modules() -> None:
    pytest.importorskip("mypy", reason=compiled.EXTRAS_REASON)
    names = compiled.extensions()  # every .pyx of the firmware, wherever it lives
    assert len(names) == 15, names
    result = _run("mypy.stubtest", "--allowlist", str(ALLOWLIST), *names)
    assert result.returncode == 0, result.stdout + result.stderr
