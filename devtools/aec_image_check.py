"""Run the image's own echo cancellers (arm64, trixie: WebRTC 1.x = AEC3, speexdsp) inside
the image's build root under qemu-user, on signals made on the host; no numpy in there.

The room tests measure the cancellers built on this machine (bookworm: WebRTC 0.3); this drives
the image's own arm64 binary — the same ``_aec`` module and libraries a Pi runs, emulated
instruction by instruction — through the same room. Two halves: ``in_image`` (run on the host:
writes the room's signals into the root, runs this file there with chroot, reads the cleaned
signal back) and ``main`` (run inside the root: frame by frame through ``firmware.core._aec``, as
the media loop drives it). Used by tests/image/test_aec_image.py and benchmarks/aec.py.
By hand, as root, after ``./build.sh image``::

    python -m devtools.aec_image_check "$INTERCOM_CACHE/img/work"
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FRAME = 160
TMP = "tmp/intercom-aec-check"


class _DebianSpeex:
    """Inside the image: the root's own libspeexdsp1 (trixie's package) through
    devtools/speex_twin.py, set up as ``_aec``'s speex, with the canceller's face."""

    def __init__(self) -> None:
        from speex_twin import SpeexTwin  # beside this file in the root

        self.twin = SpeexTwin(128)
        self.played = b""

    def playback(self, pcm: bytes, backlog: int) -> None:
        self.played = pcm

    def capture(self, pcm: bytes, backlog: int) -> bytes:
        return self.twin.frame(self.played, pcm)


def main(folder: str, kinds: list[str]) -> None:
    """Inside the image: ``folder``/played.raw and mic.raw -> out-KIND.raw per canceller
    (KIND ``debian-speex``: Debian's libspeexdsp, the reference for the box's own speexdsp)."""
    from firmware.core._aec import create, webrtc_version

    base = Path(folder)
    played, mic = (base / "played.raw").read_bytes(), (base / "mic.raw").read_bytes()
    n = min(len(played), len(mic)) // (2 * FRAME) * 2 * FRAME
    print("webrtc", webrtc_version(), flush=True)
    for kind in kinds:
        canceller = _DebianSpeex() if kind == "debian-speex" else create(kind, 128, False, False, 0)
        out = bytearray()
        t0 = time.process_time()
        for i in range(0, n, 2 * FRAME):
            canceller.playback(played[i:i + 2 * FRAME], 0)
            out += canceller.capture(mic[i:i + 2 * FRAME], 0)
        us = (time.process_time() - t0) / (n // (2 * FRAME)) * 1e6
        (base / f"out-{kind}.raw").write_bytes(bytes(out))
        print("cpu", kind, f"{us:.0f}", flush=True)


def image_aec(root: Path) -> Path | None:
    """The image's own ``firmware.core._aec`` extension (arm64) in ``root``, if installed."""
    found = sorted(root.glob("usr/local/lib/python3*/dist-packages/firmware/core/_aec*.so"))
    return found[0] if found else None


def image_root() -> Path | None:
    """The root the newest image was assembled from, when it exists and arm64 code can run."""
    root = Path(os.environ.get("INTERCOM_CACHE", "/var/cache/intercom")) / "img" / "work"
    if not (root / "usr/bin/python3").exists():
        return None
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        return None
    return root


def in_image(root: Path, played: Any, mic: Any, kinds: tuple[str, ...] = ("webrtc", "speex"),
             timeout: float = 900) -> dict[str, Any]:
    """Run the cancellers of the image in ``root`` on (played, mic) float arrays; returns
    {"webrtc_version": ..., kind: (cleaned array, µs of emulated CPU per frame)}."""
    import numpy as np

    from devtools.room import to_pcm

    work = root / TMP
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        (work / "played.raw").write_bytes(to_pcm(played))
        (work / "mic.raw").write_bytes(to_pcm(mic))
        shutil.copy(__file__, work / "aec_image_check.py")
        shutil.copy(Path(__file__).with_name("speex_twin.py"), work / "speex_twin.py")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
        r = subprocess.run(["chroot", str(root), "python3", f"/{TMP}/aec_image_check.py",
                            f"/{TMP}", *kinds], capture_output=True, text=True, env=env,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"the image's cancellers did not run: {r.stderr.strip()[-500:]}")
        res: dict[str, Any] = {}
        for line in r.stdout.splitlines():
            words = line.split()
            if words[:1] == ["webrtc"]:
                res["webrtc_version"] = words[1]
            elif words[:1] == ["cpu"]:
                out = np.frombuffer((work / f"out-{words[1]}.raw").read_bytes(), dtype="<i2")
                res[words[1]] = (out.astype(np.float64), float(words[2]))
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(root: Path, kinds: tuple[str, ...] = ("webrtc", "speex"),
            scenario: Any = None) -> dict[str, Any]:
    """The room's report (devtools.room.Report) for each of the image's cancellers."""
    from devtools import room

    sc = scenario or room.Scenario()
    played, near, mic = sc.signals()
    res = in_image(root, played, mic, kinds)
    reports: dict[str, Any] = {"webrtc_version": res.get("webrtc_version")}
    for kind in kinds:
        out, us = res[kind]
        reports[kind] = (room.report(sc, near, mic, out), us)
    return reports


if __name__ == "__main__":
    if len(sys.argv) > 1 and Path(sys.argv[1], "played.raw").exists():
        main(sys.argv[1], sys.argv[2:] or ["webrtc", "speex"])  # inside the image
    else:
        where = Path(sys.argv[1]) if len(sys.argv) > 1 else image_root()
        if where is None:
            sys.exit("no image root with qemu-user to run it in: ./build.sh image first")
        for kind, value in measure(where).items():
            print(kind, value)
