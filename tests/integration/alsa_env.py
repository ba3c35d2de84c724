"""Real alsa-lib without a sound card: PCMs on ALSA's file plugin, defined in an asoundrc that
is appended to the system configuration through ALSA_CONFIG_PATH (set before alsa-lib loads).

``box_mic`` captures from ``mic.raw`` (S16_LE, 8 kHz, mono); ``box_speaker`` plays into
``speaker.raw``. Both go through the ``plug`` layer, as on a real card.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
from pathlib import Path

ALSA_DIR = Path(tempfile.mkdtemp(prefix="intercom-alsa-"))
MIC = ALSA_DIR / "mic.raw"
SPEAKER = ALSA_DIR / "speaker.raw"
(ALSA_DIR / "asoundrc").write_text(f"""
pcm.box_mic {{
    type plug
    slave.pcm {{ type file; slave.pcm "null"; file "/dev/null"; infile "{MIC}"; format "raw" }}
}}
pcm.box_speaker {{
    type plug
    slave.pcm {{ type file; slave.pcm "null"; file "{SPEAKER}"; format "raw" }}
}}
""")
os.environ["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{ALSA_DIR / 'asoundrc'}"


def write_mic_tone(hz: float, seconds: float = 60.0, amplitude: float = 8000) -> None:
    n = int(8000 * seconds)
    MIC.write_bytes(struct.pack(f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * hz * i / 8000))
                                            for i in range(n))))


def reset_speaker() -> None:
    if SPEAKER.exists():
        SPEAKER.unlink()


def speaker_pcm() -> bytes:
    return SPEAKER.read_bytes() if SPEAKER.exists() else b""
