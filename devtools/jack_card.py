"""A paced 8 kHz ALSA device without a sound card, for tests and benchmarks: alsa-lib's jack
plugin (Debian libasound2-plugins) on a private jackd running its dummy driver, and the room
around it: a JACK client whose output is the box's microphone and whose input its speaker.

Owns the asoundrc that names the device and wires its ports, jackd's start (again under the
same name: the card coming back) and the room client. Knows nothing about the box: the caller
points the box's ``audio.capture``/``playback`` at ``pcm`` and passes ``env`` to it.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from .processes import end

RATE = 8000
_serial = itertools.count()
# jackd's SCHED_FIFO priority where it stands in for a card: a card's DMA runs on the card's
# crystal whatever the CPUs do, so the dummy driver's cycle goes above the box's loop
# (media.realtime_priority 10) and above the load the tests and benchmarks put on the machine
CARD_PRIORITY = 20


def available() -> bool:
    return bool(glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_jack.so"))


def missing() -> str | None:
    """Why this card and its room cannot run here (None: they can)."""
    if shutil.which("jackd") is None:
        return "jackd (Debian jackd2) is not installed"
    if not available():
        return "alsa-lib's jack plugin (Debian libasound2-plugins) is not installed"
    try:
        import jack  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"the JACK-Client module cannot load: {exc}"
    return None


def start(tmp: Path, pcm: str, playback_port: str, capture_port: str,
          period: int, realtime: int = 0) -> tuple[subprocess.Popen, dict[str, str]]:
    """jackd (dummy driver, RATE Hz, ``period`` frames a cycle) and the environment under which
    alsa-lib knows the ALSA device ``pcm`` (through ``plug``), its output connected to
    ``playback_port`` and its input to ``capture_port``. jackd's own messages go to
    ``tmp/jackd.log``; the server name is new at every call (a test's jackd never meets the
    last one's leftovers). ``realtime``: jackd's SCHED_FIFO priority (0: normal scheduling),
    for a clock that keeps time on busy cores, as a card's interrupt does."""
    name = f"{pcm}-{os.getpid()}-{next(_serial)}"
    (tmp / "asoundrc").write_text(
        f'pcm.{pcm}_raw {{\n type jack\n playback_ports {{ 0 "{playback_port}" }}\n'
        f' capture_ports {{ 0 "{capture_port}" }}\n}}\n'
        f'pcm.{pcm} {{\n type plug\n slave.pcm "{pcm}_raw"\n}}\n')
    env = {"JACK_DEFAULT_SERVER": name, "JACK_NO_AUDIO_RESERVATION": "1",
           "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{tmp / 'asoundrc'}"}
    return serve(env, period, tmp / "jackd.log", realtime), env


def serve(env: dict[str, str], period: int, log: Path | None = None,
          realtime: int = 0) -> subprocess.Popen:
    """jackd's dummy driver at RATE Hz under the server name in ``env`` (as ``start`` made it):
    the card, or the card plugged back in after ``stop``; its messages appended to ``log``."""
    scheduling = ["-R", "-P", str(realtime)] if realtime else ["--no-realtime"]
    with open(log or os.devnull, "ab") as out:
        return subprocess.Popen(["jackd", *scheduling, "-n", env["JACK_DEFAULT_SERVER"],
                                 "-d", "dummy", "-r", str(RATE), "-p", str(period)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env})


def stop(jackd: subprocess.Popen) -> None:
    """SIGTERM, as a card that is pulled out: jackd tells its clients it is going."""
    end(jackd, 5)


def client(server: str, name: str = "room", timeout: float = 10.0) -> Any:
    """A JACK client (the ``jack`` package) on the jackd ``start`` launched, once it answers."""
    import jack

    deadline = time.monotonic() + timeout
    while True:
        try:
            return jack.Client(name, servername=server, no_start_server=True)
        except jack.JackError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"jackd {server} takes no clients") from None
            time.sleep(0.2)


class Room:
    """The room around the box on a jackd: its output port ``mic`` is what the box's
    microphone picks up (``track``, from its first sample on), its input port ``speaker``
    what the box's loudspeaker plays, both handled in one process cycle, so a sample played at
    ``track[i]`` and one heard at ``heard[i]`` are the same instant. ``cycles`` keeps each
    cycle's first sample and CLOCK_MONOTONIC time. ``echo``: the room's own echo, what the
    speaker played ``echo`` samples ago added to the microphone at unit gain (None: none).
    Made with the ``jack`` package (JACK-Client on PyPI); ``start`` waits for jackd to take
    clients."""

    def __init__(self, server: str, track: np.ndarray, name: str = "room") -> None:
        self.server, self.name = server, name
        self.track = np.asarray(track, dtype=np.float32)
        self.heard = np.zeros(len(self.track), dtype=np.float32)
        self.cycles = np.zeros((len(self.track) // 16 + 16, 2))  # (first sample, monotonic)
        self.pos = self.cycle = 0
        self.playing = False
        self.echo: int | None = None
        self.client: Any = None

    def start(self, timeout: float = 10.0) -> Room:
        self.client = client(self.server, self.name, timeout)
        self.mic = self.client.outports.register("mic")
        self.speaker = self.client.inports.register("speaker")
        self.client.set_process_callback(self._process)
        self.client.activate()
        return self

    def _process(self, frames: int) -> None:
        t = time.monotonic()
        pos, out = self.pos, self.mic.get_array()
        if self.playing and pos + frames <= len(self.track):
            self.heard[pos:pos + frames] = self.speaker.get_array()
            out[:] = self.track[pos:pos + frames]
            echo = self.echo
            a = pos - (echo or 0)
            if echo is not None and a + frames > 0:
                out[max(0, -a):] += self.heard[max(0, a):a + frames]
            if self.cycle < len(self.cycles):
                self.cycles[self.cycle] = (pos, t)
                self.cycle += 1
            self.pos = pos + frames
        else:
            out.fill(0)

    def play(self) -> None:
        """From the track's first sample again, the recording with it."""
        self.playing = False
        self.pos = self.cycle = 0
        self.heard[:] = 0
        self.cycles[:] = 0
        self.playing = True

    def pause(self) -> int:
        """Stop playing and recording; the samples played so far."""
        self.playing = False
        return self.pos

    def loop_through(self, on: bool) -> None:
        """Its own microphone port straight into its speaker port: the harness's own lag."""
        (self.client.connect if on else self.client.disconnect)(self.mic, self.speaker)

    def last(self, seconds: float) -> np.ndarray:
        """What reached the speaker over the last ``seconds`` played (int16 scale)."""
        pos = self.pos
        return self.heard[max(0, pos - int(seconds * RATE)):pos].astype(np.float64) * 32768

    def close(self) -> None:
        """Leave jackd (a no-op against one that is gone)."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.deactivate()
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None


def tone(hz: float, seconds: float, level: float = 0.25) -> np.ndarray:
    """A sine for the room to play (JACK's float scale)."""
    return (level * np.sin(2 * np.pi * hz * np.arange(int(seconds * RATE)) / RATE)).astype(
        np.float32)
