"""The image's own echo cancellers — its arm64 ``firmware.core._aec`` against trixie's WebRTC 1.x
(AEC3) and speexdsp, as a Pi runs them — in the room of tests/unit/test_aec.py, under qemu-user
in the root the image was assembled from (devtools/aec_image_check.py). The unit tests measure
this machine's build (bookworm's WebRTC 0.3); this is what ships.

Emulation runs the same instructions a Pi's Cortex-A53 would, so the cleaned signal is the one a
Pi computes; the CPU figures printed are the emulator's, not a Pi's.
Runs when ``./build.sh image`` (or ``./build.sh test``) has left that root and qemu-user is
registered with binfmt_misc.

The image's speexdsp is the box's own ``-O3`` build (build.sh cross-builds it, ``_aec`` carries it
statically): checked on the module's ELF, and its output against trixie's libspeexdsp1 in the same
root on the same room (±1 LSB: what was measured on arm64; x86 is sample-identical).
"""

from __future__ import annotations

import pytest

from devtools import aec_image_check, elf

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


def test_the_images_speex_is_its_own_o3_copy_not_debians_library() -> None:
    assert ROOT is not None
    module = aec_image_check.image_aec(ROOT)
    assert module is not None, f"no firmware/core/_aec*.so installed in {ROOT}"
    needed = elf.needed(module)
    assert "libc.so.6" in needed and not any("libspeexdsp" in n for n in needed), needed
    own = elf.defined(module, "speex_")
    for name in ("speex_echo_cancellation", "speex_preprocess_run", "speex_echo_state_init"):
        assert own.get(name) == "LOCAL", (name, own)


def test_the_images_speex_cleans_the_room_as_trixies_libspeexdsp_within_one_lsb() -> None:
    assert ROOT is not None
    np = pytest.importorskip("numpy")
    from devtools import room

    sc = room.Scenario()
    played, near, mic = sc.signals()
    res = aec_image_check.in_image(ROOT, played, mic, ("speex", "debian-speex"))
    ours, debian = res["speex"][0], res["debian-speex"][0]
    assert len(ours) == len(debian) == int(sc.seconds * room.RATE)
    assert np.abs(ours).max() > 100  # a cleaned signal, not silence
    diff = np.abs(ours - debian)
    print(f"{np.count_nonzero(diff)} of {len(diff)} samples differ, at most by {diff.max():.0f};"
          f" {res['speex'][1]:.0f} against {res['debian-speex'][1]:.0f} us per frame under "
          "qemu-user")
    assert diff.max() <= 1, diff.max()
    r_ours, r_debian = (room.report(sc, near, mic, out) for out in (ours, debian))
    assert abs(r_ours.erle_db - r_debian.erle_db) < 0.05, (r_ours, r_debian)
    assert abs(r_ours.erle_changed_db - r_debian.erle_changed_db) < 0.05, (r_ours, r_debian)
