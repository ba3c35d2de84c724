"""The image's own echo cancellers — its arm64 ``firmware.core._aec`` against trixie's WebRTC 1.x
(AEC3) and speexdsp, as a Pi runs them — in the room of tests/unit/test_aec.py, under qemu-user
in the root the image was assembled from (devtools/aec_image_check.py). The unit tests measure
this machine's build (bookworm's WebRTC 0.3); this is what ships.

Emulation runs the same instructions a Pi's Cortex-A53 would, so the cleaned signal is the one a
Pi computes; the CPU figures printed are the emulator's, not a Pi's.
Runs when ``./build.sh image`` (or ``./build.sh test``) has left that root and qemu-user is
registered with binfmt_misc.
"""

from __future__ import annotations

import pytest

from devtools import aec_image_check

ROOT = aec_image_check.image_root()
pytestmark = pytest.mark.skipif(ROOT is None,
                                reason="no image root to run arm64 code in (./build.sh image)")


@pytest.fixture(scope="module")
def reports() -> dict:
    assert ROOT is not None
    return aec_image_check.measure(ROOT)


def test_the_image_carries_webrtc_1x_aec3(reports: dict) -> None:
    assert reports["webrtc_version"] == "1.x", reports["webrtc_version"]


@pytest.mark.parametrize("kind", ["webrtc", "speex"])
def test_the_images_cancellers_clean_the_room_and_keep_the_visitor(reports: dict,
                                                                   kind: str) -> None:
    r, us = reports[kind]
    print(kind, r, f"{us:.0f} us per frame under qemu-user")
    assert r.erle_db >= 20 and r.erle_after_dt_db >= 20 and r.erle_changed_db >= 20, r
    assert r.convergence_s <= 3.0 and r.reconverge_s <= 3.0, r
    assert r.near.level_db >= -6 and r.near.correlation >= 0.7 and r.near.lag_ms <= 30, r.near

