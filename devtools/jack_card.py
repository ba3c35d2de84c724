"""A paced 8 kHz ALSA device without a sound card, for benchmarks: alsa-lib's jack plugin
(Debian libasound2-plugins) on a private jackd running its dummy driver.

Owns the asoundrc that names the device and wires its ports, and jackd's start. Knows nothing
about the box: the caller points the box's ``audio.capture``/``playback`` at ``pcm`` and passes
``env`` to it.
"""

from __future__ import annotations

import glob
import os
import subprocess
import time
from pathlib import Path
from typing import Any

RATE = 8000


def available() -> bool:
    return bool(glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_jack.so"))


def start(tmp: Path, pcm: str, playback_port: str, capture_port: str,
          period: int, realtime: int = 0) -> tuple[subprocess.Popen, dict[str, str]]:
    """jackd (dummy driver, RATE Hz, ``period`` frames a cycle) and the environment under which
    alsa-lib knows the ALSA device ``pcm`` (through ``plug``), its output connected to
    ``playback_port`` and its input to ``capture_port``. ``realtime``: jackd's SCHED_FIFO
    priority (0: normal scheduling), for a clock that keeps time on busy cores, as a card's
    interrupt does."""
    name = f"{pcm}-{os.getpid()}"
    (tmp / "asoundrc").write_text(
        f'pcm.{pcm}_raw {{\n type jack\n playback_ports {{ 0 "{playback_port}" }}\n'
        f' capture_ports {{ 0 "{capture_port}" }}\n}}\n'
        f'pcm.{pcm} {{\n type plug\n slave.pcm "{pcm}_raw"\n}}\n')
    env = {"JACK_DEFAULT_SERVER": name, "JACK_NO_AUDIO_RESERVATION": "1",
           "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{tmp / 'asoundrc'}"}
    scheduling = ["-R", "-P", str(realtime)] if realtime else ["--no-realtime"]
    jackd = subprocess.Popen(["jackd", *scheduling, "-n", name, "-d", "dummy", "-r",
                              str(RATE), "-p", str(period)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, **env})
    return jackd, env


def client(server: str, name: str = "room", timeout: float = 10.0) -> Any:
    """A JACK client (the ``jack`` package) on the jackd ``start`` launched, once it answers."""
    import jack

    deadline = time.monotonic() + timeout
    while True:
        try:
            return jack.Client(name, servername=server, no_start_server=True)
        except jack.JackError:
            if time.monotonic() > deadline:
                raise RuntimeError("jackd's dummy driver did not start") from None
            time.sleep(0.2)
