"""The kernel test guest for tests/kernel: Debian's x86 kernel booted in QEMU on this machine's
root (devtools/kguest.py), prepared once a session into INTERCOM_CACHE (from an empty cache it
fetches ~70 MB with apt-get download).

Without qemu-system-x86_64 the tests are skipped, except under ``./build.sh test`` (CI;
``INTERCOM_REQUIRE_BUILD=1``, see tests/compiled.py), where that is a failure: build.sh
installs qemu-system-x86, so a missing one there is a missing install step. A guest that cannot
be prepared (no package, no network) is an error in every run.
"""

from __future__ import annotations

import shutil
import time

import pytest

from devtools import kguest
from devtools.paths import CACHE

from .. import compiled

TIMINGS: list[str] = []


@pytest.fixture(scope="session")
def guest() -> kguest.Guest:
    if shutil.which("qemu-system-x86_64") is None:
        why = "no qemu-system-x86_64 (Debian package qemu-system-x86; ./build.sh installs it)"
        if compiled.required():
            pytest.fail(f"{why}, and {compiled.REQUIRE} is set: the kernel tests must run")
        pytest.skip(why)
    started = time.monotonic()
    made = kguest.prepare(CACHE)
    TIMINGS.append(f"kernel guest: {made.package} ({made.release}), {len(made.modules)} modules, "
                   f"{made.download_bytes / 1e6:.1f} MB of .deb when fetched, ready in "
                   f"{time.monotonic() - started:.1f} s")
    return made


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in TIMINGS:
        terminalreporter.write_line(line)
