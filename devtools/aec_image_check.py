"""Run the image's own echo cancellers (arm64, trixie: WebRTC 1.x = AEC3, speexdsp) on a
synthetic echo, inside the image's build root under qemu-user, without numpy.

The room tests measure the cancellers built on this machine (bookworm: WebRTC 0.3); this shows
that the image's build links and runs its own, and that they cancel. Usage, as root, after
``./build.sh image``::

    cp devtools/aec_image_check.py "$INTERCOM_CACHE/img/work/tmp/" &&
      chroot "$INTERCOM_CACHE/img/work" python3 /tmp/aec_image_check.py webrtc speex

Prints ERLE over the last 6 s of 12 s of syllable-like noise through a 40 ms, -10 dB, decaying
echo path, and the CPU per 20 ms frame (under emulation: several times a Pi's).
"""

from __future__ import annotations

import array
import math
import random
import sys
import time

from firmware._aec import create, webrtc_version

RATE, FRAME, SECONDS = 8000, 160, 12


def signals(seed: int = 7) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    far = [rng.gauss(0, 3000) * (1.0 if (i // 2400) % 3 else 0.2)
           for i in range(RATE * SECONDS)]
    delay = 320  # 40 ms
    taps = {delay - 1: 0.3}
    for k in range(1, 200):
        taps[delay - 1 + k] = 0.3 * rng.gauss(0, 0.3) * math.exp(-k / 40)
    mic = [sum(g * far[i - d] for d, g in taps.items() if i >= d) + rng.gauss(0, 30)
           for i in range(len(far))]
    return far, mic


def pcm(x: list[float]) -> bytes:
    return array.array("h", [max(-32768, min(32767, int(v))) for v in x]).tobytes()


def main(kinds: list[str]) -> None:
    print("WebRTC audio processing:", webrtc_version())
    far, mic = signals()
    frames = len(far) // FRAME
    for kind in kinds:
        canceller = create(kind, 128, False, False, 0)
        out = []
        t0 = time.process_time()
        for f in range(frames):
            canceller.playback(pcm(far[f * FRAME:(f + 1) * FRAME]), 0)
            out.append(canceller.capture(pcm(mic[f * FRAME:(f + 1) * FRAME]), 0))
        us = (time.process_time() - t0) / frames * 1e6
        cleaned = array.array("h", b"".join(out))
        start = RATE * (SECONDS - 6)
        e_in = sum(v * v for v in mic[start:])
        e_out = sum(v * v for v in cleaned[start:])
        print(f"{kind}: ERLE {10 * math.log10(e_in / max(e_out, 1)):.1f} dB, {us:.0f} µs CPU "
              "per frame")


if __name__ == "__main__":
    main(sys.argv[1:] or ["webrtc", "speex"])
