"""devtools/callgrind_aec.py's instruments against the real library: the timed ctypes set-up
produces the product's samples (and a differently built one does not), and callgrind counts each
speexdsp part on its own (valgrind on a real Python process running ``_aec.SpeexCanceller``).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from tests import compiled

pytest.importorskip("firmware.core._aec", reason=compiled.REASON)
pytest.importorskip("numpy", reason=compiled.EXTRAS_REASON)
import numpy as np

from devtools import callgrind_aec, room
from firmware.core import _aec

pytestmark = [pytest.mark.integration, pytest.mark.compiled]


def test_the_timed_set_up_is_the_products_sample_for_sample() -> None:
    times = callgrind_aec.wall(3.0, 128, 1)  # raises SystemExit when the samples differ
    assert all(0 < t < math.inf for t in times.values()), times
    # the check has teeth: the same library set up with another tail gives other samples
    _, played, _, mic = callgrind_aec.signals(3.0)
    product = room.run(_aec.create("speex", tail_ms=128), played, mic)
    twin = callgrind_aec._Twin(64)
    try:
        other, _, _ = twin.run(played, mic)
    finally:
        twin.close()
    assert not np.array_equal(other, product)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_callgrind_counts_each_part_on_its_own(tmp_path: Path) -> None:
    echo = callgrind_aec.count("speex_echo_cancellation", 2.0, 128, tmp_path)
    pre = callgrind_aec.count("speex_preprocess_run", 2.0, 128, tmp_path)
    assert echo["frames"] == pre["frames"] == 100
    assert echo["instructions"] > 0 and pre["instructions"] > 0
    echo_names = " ".join(name for _, name in echo["top"])
    pre_names = " ".join(name for _, name in pre["top"])
    assert "speex_echo_cancellation" in echo_names and "speex_preprocess_run" not in echo_names
    assert "speex_preprocess_run" in pre_names and "speex_echo_cancellation" not in pre_names
