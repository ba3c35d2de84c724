"""The card loop on real alsa-lib: both sides of a call on one ALSA device (alsa-lib's jack
plugin on jackd's dummy driver, paced like a card's crystal), driven by the Cython loop itself
through ``firmware.core._card`` — no Python audio thread in the box's process — against a plain
RTP peer socket on loopback.

A JACK client of this test is the room: its ``mic`` port is the box's microphone (a 700 Hz
tone), its ``speaker`` port records what the box plays. The peer sends 1013 Hz as RTP every
20 ms and keeps what the box sends. Both judged by FFT.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devtools import jack_card
from firmware import _rtpcore as core
from firmware.events import MediaParams
from firmware.media.alsa import AlsaSink, AlsaSource
from firmware.media.stream import RtpPorts, RtpSession

from ..audio import pcm_array, peak_hz, tone_snr_db

pytestmark = pytest.mark.integration
RATE = 8000
MIC_HZ, FAR_HZ = 700.0, 1013.0


class Room:
    """The JACK client standing for the room: a tone into the box's microphone, its speaker
    recorded (the process callback copies arrays: nothing else)."""

    def __init__(self, server: str, seconds: float) -> None:
        self.client = jack_card.client(server)
        self.mic = self.client.outports.register("mic")
        self.speaker = self.client.inports.register("speaker")
        self.heard = np.zeros(int(RATE * seconds), dtype=np.float32)
        self.pos = 0
        self.phase = 0
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        n = np.arange(self.phase, self.phase + frames)
        self.mic.get_array()[:] = 0.25 * np.sin(2 * np.pi * MIC_HZ * n / RATE)
        self.phase += frames
        if self.pos + frames <= len(self.heard):
            self.heard[self.pos:self.pos + frames] = self.speaker.get_array()
            self.pos += frames

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.deactivate()
            self.client.close()


@pytest.fixture
def card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """jackd on its dummy driver, the ALSA device ``boxcard`` wired to the room's ports."""
    if not jack_card.available():
        pytest.skip("alsa-lib's jack plugin (libasound2-plugins) is missing")
    pytest.importorskip("jack", reason="the JACK-Client package is missing")
    jackd, env = jack_card.start(tmp_path, "boxcard", "room:speaker", "room:mic", 80)
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # alsa-lib re-reads its configuration when the path changes
    room = Room(env["JACK_DEFAULT_SERVER"], 10.0)
    try:
        yield room
    finally:
        room.close()
        jackd.terminate()
        with contextlib.suppress(Exception):
            jackd.wait(5)


def python_threads() -> set[str]:
    """The Python threads of this process (JACK's own callback thread, which is not one,
    left out)."""
    return {t.name for t in threading.enumerate()
            if not isinstance(t, threading._DummyThread)}  # noqa: SLF001


def test_a_call_on_the_card_loop_carries_audio_both_ways_without_python_threads(card: Room) \
        -> None:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    ports = RtpPorts("127.0.0.1")
    session = RtpSession(ports, AlsaSource("boxcard"), AlsaSink("boxcard"))
    got: list[bytes] = []
    before = python_threads()
    session.start(MediaParams("127.0.0.1", peer.getsockname()[1], 0, "PCMU", 101, 20,
                              "sendrecv"))
    try:
        assert session.stream is not None and session.stream.card_state == "ok"
        threads = python_threads() - before
        start = time.monotonic()
        k = 0
        while time.monotonic() - start < 4.0:
            # the far end: a 1013 Hz packet every 20 ms, on its own (the monotonic) clock
            pcm = b"".join(int(8000 * np.sin(2 * np.pi * FAR_HZ * (k * 160 + i) / RATE))
                           .to_bytes(2, "little", signed=True) for i in range(160))
            peer.sendto(core.rtp_pack(0, False, k, k * 160, 0x1234, core.encode_ulaw(pcm)),
                        ("127.0.0.1", ports.port))
            k += 1
            with contextlib.suppress(BlockingIOError):
                while True:
                    got.append(peer.recv(2048))
            time.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
        stats = session.stats()
    finally:
        session.stop()
        session.source.close()
        session.sink.close()
        ports.close()
        peer.close()
    # only the loop's own thread: no card thread, no pump
    assert threads == {"rtp-loop"}, threads
    # a paced card is never held back to the network's pace (that is for unpaced plugins)
    assert stats["card"] == "ok" and stats["held_ticks"] == 0, stats
    # the card's clock paces the loop: 50 packets a second, give or take the start
    assert 180 <= stats["sent"] <= 210, stats
    frames = [p for p in map(core.rtp_parse, got) if p[0] == 0]
    sent = pcm_array(b"".join(core.decode_ulaw(p[5]) for p in frames))[RATE:]
    assert len(sent) > RATE, len(sent)
    assert abs(peak_hz(sent) - MIC_HZ) < 10, "the room's microphone went out as RTP"
    assert tone_snr_db(sent, MIC_HZ) > 20
    heard = card.heard[RATE:card.pos]
    heard = (heard * 32767).astype(np.float64)
    assert len(heard) > RATE and np.abs(heard).max() > 2000, "the speaker played something"
    assert abs(peak_hz(heard) - FAR_HZ) < 10, "the peer's RTP reached the speaker"
    assert tone_snr_db(heard, FAR_HZ) > 20
