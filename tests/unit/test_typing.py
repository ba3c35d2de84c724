"""mypy on the package, and stubtest: the Cython modules' .pyi stubs match what was compiled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ALLOWLIST = Path(__file__).resolve().parent / "stubtest-allowlist.txt"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_mypy_on_firmware() -> None:
    result = _run("mypy", "firmware")
    assert result.returncode == 0, result.stdout + result.stderr


def test_stubtest_on_the_cython_modules() -> None:
    result = _run("mypy.stubtest", "--allowlist", str(ALLOWLIST),
                  "firmware._rtpcore", "firmware._transform", "firmware._srtp",
                  "firmware._processor", "firmware._aec", "firmware._g711", "firmware._rtp",
                  "firmware._jitter", "firmware._rtcp", "firmware._dtmf", "firmware._conceal",
                  "firmware._drift", "firmware._mediacore", "firmware._plc")
    assert result.returncode == 0, result.stdout + result.stderr
