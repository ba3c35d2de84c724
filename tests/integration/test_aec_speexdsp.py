"""The speexdsp inside ``_aec``: when build.sh built the box's own ``-O3`` copy (it exports
``INTERCOM_SPEEXDSP``, its prefix, to setup.py and to the tests it runs), the module the suite
imports carries that copy — no libspeexdsp.so at run time — and on the AEC room test's echo
scenario its output is Debian's libspeexdsp's, sample for sample (Debian's library driven through
devtools/callgrind_aec.py's ctypes twin of the product's speex set-up).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import compiled

pytest.importorskip("firmware.core._aec", reason=compiled.REASON)
pytest.importorskip("numpy", reason=compiled.EXTRAS_REASON)
import numpy as np

from devtools import callgrind_aec, elf, room
from devtools.paths import REPO
from firmware.core import _aec

pytestmark = [pytest.mark.integration, pytest.mark.compiled]

PRIVATE = os.environ.get("INTERCOM_SPEEXDSP", "")


@pytest.mark.skipif(not PRIVATE, reason="INTERCOM_SPEEXDSP is not set: not a ./build.sh run, "
                                        "which builds the -O3 copy and sets it")
def test_aec_carries_the_private_speexdsp_and_needs_no_libspeexdsp() -> None:
    module = Path(_aec.__file__)
    needed = elf.needed(module)
    assert "libc.so.6" in needed and not any("libspeexdsp" in n for n in needed), needed
    # the library's entry points are inside the module, bound locally (hidden: nothing loaded
    # beside it, Debian's libspeexdsp included, can stand in for them)
    own = elf.defined(module, "speex_")
    for name in ("speex_echo_cancellation", "speex_preprocess_run", "speex_echo_state_init"):
        assert own.get(name) == "LOCAL", (name, own)
    # and a fresh interpreter that imports it maps no libspeexdsp
    maps = subprocess.run([sys.executable, "-c", "import firmware.core._aec as a; "
                           "print(a.__file__); print(open('/proc/self/maps').read())"],
                          capture_output=True, text=True, check=True, cwd=REPO, timeout=60).stdout
    assert Path(maps.splitlines()[0]) == Path(_aec.__file__)
    assert "_aec" in maps and "libspeexdsp" not in maps


def test_aec_cleans_the_room_as_debians_libspeexdsp_does() -> None:
    sc = room.Scenario()  # 24 s: far-end speech, double talk, the echo path changing
    played, _, mic = sc.signals()
    product = room.run(_aec.create("speex", tail_ms=128, frame_samples=room.FRAME), played, mic)
    twin = callgrind_aec._Twin(128)  # Debian's libspeexdsp.so.1, set up as _aec sets it up
    try:
        debian, _, _ = twin.run(played, mic)
    finally:
        twin.close()
    assert len(product) == len(debian) == int(sc.seconds * room.RATE)
    assert np.abs(mic).max() > 1000 and np.abs(product).max() > 100  # an echo, a cleaned signal
    diff = np.abs(product - debian)
    # x86 -O3 was measured bit-identical (docs/notes/cpu.md): any sample off is a failure here
    assert np.array_equal(product, debian), (
        f"{np.count_nonzero(diff)} samples differ, at most by {diff.max():.0f}")
