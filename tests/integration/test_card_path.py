"""The box on a sound card through real alsa-lib, end to end through Asterisk: the jack plugin
(Debian libasound2-plugins) on jackd's dummy driver at 8000 Hz is the card, paced like a
crystal; a JACK client of the test is the room (it plays a tone into the box's microphone and
records the box's speaker); baresip is the reception phone. Audio is judged by FFT at both ends,
the packet clock on the wire (a packet socket on ``lo``), the rest through ``intercom status``.

What is proved here: audio both ways on the card path with no Python thread moving audio; a
card that stalls (jackd stopped for 400 ms) does not stop the packet clock; an xrun (the loop's
thread stopped for 400 ms while the card runs on) is recovered in place, counted, and audio goes
on; a card that disappears mid-call (jackd terminated) leaves the call up with the RTP
clock steady, is reported (status, error LED, new calls refused with 480) and is reopened by
its name when it comes back. What the jack-plugin card cannot prove about a USB dongle on a Pi:
README, "What the tests do not prove", and docs/notes/card-path.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from devtools import jack_card, thread_names
from devtools.asterisk import Asterisk
from devtools.baresip import Baresip
from devtools.box.process import Intercom
from devtools.rtp_wire import Wire
from devtools.waiting import wait_for

from ..audio import baresip_heard, peak_hz, tone_snr_db
from .freeze import thread_stopped

pytestmark = pytest.mark.integration

PCM = "iccard"
PERIOD = 80  # jackd's cycle: 10 ms
MIC_HZ, FAR_HZ = 700, 1000  # the room's voice into the box; baresip's tone
# the Python threads the old card path ran (media/alsa.py, media/stream.py's pump)
AUDIO_THREADS = {"AlsaSource", "AlsaSink", "audio-pump"}
MAX_GAP = 0.060  # seconds between two of the box's packets on the wire, at worst
SETTLE = 0.3  # seconds for the packet socket's reader to catch up with the wire


@dataclass
class Card:
    """The jack-plugin card and its room; ``pull`` and ``plug`` take it away and bring it
    back under the same name."""

    env: dict[str, str]
    log: Path
    jackd: subprocess.Popen | None = None
    room: jack_card.Room | None = None
    track: np.ndarray = field(default_factory=lambda: jack_card.tone(MIC_HZ, 150))

    def plug(self) -> None:
        self.jackd = jack_card.serve(self.env, PERIOD, self.log)
        self.room = jack_card.Room(self.env["JACK_DEFAULT_SERVER"], self.track).start()
        self.room.play()

    def pull(self) -> None:
        jack_card.stop(self.jackd)  # the room's client is shut down with it
        if self.room is not None:
            self.room.close()

    def stall(self, seconds: float) -> None:
        """The card stops for ``seconds`` (its clock and both directions), then goes on."""
        os.kill(self.jackd.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(self.jackd.pid, signal.SIGCONT)

    def speaker(self, seconds: float) -> np.ndarray:
        """What the box's loudspeaker played over the last ``seconds``."""
        assert self.room is not None
        return self.room.last(seconds)

    def mark(self) -> int:
        """The room's place in its track now (for ``speaker_since``)."""
        assert self.room is not None
        return self.room.pos

    def speaker_since(self, mark: int, start: float, end: float) -> np.ndarray:
        """What the box's loudspeaker played from ``start`` to ``end`` seconds after ``mark``."""
        assert self.room is not None
        a, b = mark + int(start * jack_card.RATE), mark + int(end * jack_card.RATE)
        assert self.room.pos >= b, "the room has not played that far yet"
        return self.room.heard[a:b].astype(np.float64) * 32768


@pytest.fixture
def card(tmp_path: Path) -> Iterator[Card]:
    """The card and its room, up before the box starts and taken away after it stopped (list
    it before ``intercom``)."""
    why = jack_card.missing()
    if why:
        pytest.skip(why)
    jackd, env = jack_card.start(tmp_path, PCM, "room:speaker", "room:mic", PERIOD)
    c = Card(env, tmp_path / "jackd.log", jackd)
    try:
        c.room = jack_card.Room(env["JACK_DEFAULT_SERVER"], c.track).start()
        c.room.play()
        yield c
    finally:
        c.pull()


@pytest.fixture
def wire() -> Iterator[Wire]:
    if os.geteuid() != 0:
        pytest.skip("the packet socket on lo needs root")
    w = Wire()
    yield w
    w.close()


@dataclass
class Call:
    box: Intercom
    phone: Baresip
    record: Path


def _call(intercom: Callable[..., Intercom], baresip: Callable[..., Baresip], card: Card,
          tmp_path: Path) -> Call:
    """The box on the card (both directions ALSA) calls baresip (5001, answers at once, sends
    FAR_HZ and records what it decodes) through Asterisk."""
    record = tmp_path / "baresip-rec"
    record.mkdir(exist_ok=True)
    phone = baresip("5001", answer="auto", tone_hz=FAR_HZ, record_dir=record)
    box = intercom(audio={"capture": PCM, "playback": PCM}, log_level="info",
                   env={**card.env, **thread_names.env()})
    box.wait_state("idle")
    _dial(box, phone)
    return Call(box, phone, record)


def _dial(box: Intercom, phone: Baresip) -> None:
    assert box.cmd("call", "5001")["ok"]
    phone.wait_event("CALL_ESTABLISHED", 15)
    box.wait_state("in_call")


def _hang_up(call: Call) -> None:
    reply = call.box.cmd("hangup")
    if not reply["ok"]:
        time.sleep(0.5)
        raise AssertionError(f"hangup: {reply} (box exit status: {call.box.proc.poll()})")
    call.phone.wait_event("CALL_CLOSED", 10)
    call.box.wait_state("idle")


def _tone(x: np.ndarray, hz: float, what: str, rate: int = 8000) -> None:
    """``x`` is the tone ``hz``: its FFT peak, 10 dB above everything else."""
    assert np.abs(x).max() > 500, f"{what}: silence (peak {np.abs(x).max():.0f})"
    got, snr = peak_hz(x, rate), tone_snr_db(x, hz, rate)
    assert abs(got - hz) < 15 and snr > 10, f"{what}: peak {got:.0f} Hz, SNR {snr:.1f} dB"


def _heard_by_phone(call: Call, start: float, end: float) -> np.ndarray:
    """What baresip decoded from ``start`` to ``end`` seconds of its last call (negative:
    from the call's end)."""
    y, rate = baresip_heard(call.record, last_call=True)
    return y[int(start * rate) or None:int(end * rate) or None]


def _xruns(status: dict) -> int:
    """The card's xruns as the status counts them: ``audio.xruns`` (issue #20), or the media
    loop's own ``rtp.audio_xruns``."""
    audio, rtp = status.get("audio") or {}, status.get("rtp") or {}
    if "xruns" in audio:
        return int(audio["xruns"])
    assert "audio_xruns" in rtp, f"no xrun count in the status: audio {sorted(audio)}"
    return int(rtp["audio_xruns"])


def _audio_states(box: Intercom, seconds: float) -> list[str]:
    """``audio.state`` as often as the status answers for ``seconds``."""
    states, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        states.append(box.status()["audio"]["state"])
        time.sleep(0.05)
    return states


def _thread_id(pid: int, name: str) -> int:
    """The id of ``pid``'s thread called ``name`` (thread_names' hook names Python threads)."""
    found = [int(t) for t, n in thread_names.tasks(pid) if n == name]
    assert len(found) == 1, f"threads called {name}: {found}"
    return found[0]


def _legs_up(asterisk: Asterisk) -> list[str]:
    """The channels Asterisk has up (a call through it is two: the box's and baresip's)."""
    lines = asterisk.rx("core show channels concise").splitlines()
    return sorted(line.split("-")[0] for line in lines if "!Up!" in line)


def _clock(wire: Wire, port: int, start: float, end: float) -> tuple[int, float]:
    """(packets, the longest gap in seconds) of the box's packets to ``port`` in [start, end)."""
    t = wire.times(port, start, end)
    gaps = np.diff([start, *t, end])
    return len(t), float(gaps.max())


def test_call_carries_audio_both_ways_with_no_python_audio_thread(
        asterisk, card, intercom, baresip, tmp_path) -> None:
    """The room's 700 Hz reaches baresip and baresip's 1000 Hz reaches the room, through
    alsa-lib both ways, and the box runs no Python thread that moves audio: the loop calls the
    card itself."""
    call = _call(intercom, baresip, card, tmp_path)
    time.sleep(4)
    threads = thread_names.names(call.box.proc.pid)
    speaker = card.speaker(2.0)
    status = call.box.status()
    _hang_up(call)
    assert "rtp-loop" in threads, f"the loop thread names itself (hook on?): {threads}"
    assert not AUDIO_THREADS & set(threads), f"Python audio threads in the call: {threads}"
    assert status["audio"]["state"] == "ok", status["audio"]
    # the device the loop opened, both sides (a name that is not `usb` stays as configured)
    assert (status["audio"]["capture_device"], status["audio"]["playback_device"]) == \
        (PCM, PCM), status["audio"]
    assert f"audio: capture {PCM}, playback {PCM}\n" in call.box.says("status")
    _tone(speaker, FAR_HZ, "the box's speaker (room recording)")
    _tone(_heard_by_phone(call, 1.0, -0.5), MIC_HZ, "baresip (the box's microphone)")


def test_stalls_keep_the_clock_and_an_xrun_is_recovered(asterisk, card, wire, intercom,
                                                         baresip, tmp_path) -> None:
    """Two stalls mid-call. The card stops for 400 ms (jackd stopped: neither direction
    moves): the box's packet clock does not wait for it. Then the loop stops for 400 ms while
    the card runs on (the loop's thread stopped alone, as a late reader on a busy board): the
    card's buffers overrun and underrun; the box recovers, counts the xrun, and both directions
    carry their tone afterwards in the same call."""
    call = _call(intercom, baresip, card, tmp_path)
    remote = call.box.status()["media"]["remote_port"]
    time.sleep(2)
    before = _xruns(call.box.status())
    stalled = time.monotonic()
    card.stall(0.4)
    time.sleep(1.0 + SETTLE)
    sent, gap = _clock(wire, remote, stalled, stalled + 1.4)
    assert sent >= 63 and gap <= MAX_GAP, \
        f"RTP clock while the card stalled: {sent} packets in 1.4 s, longest gap " \
        f"{gap * 1000:.0f} ms"
    loop = _thread_id(call.box.proc.pid, "rtp-loop")
    with thread_stopped(loop):
        time.sleep(0.4)
    resumed = card.mark()
    states = _audio_states(call.box, 2.0)
    status = wait_for(lambda: (s := call.box.status()) and _xruns(s) > before and s, 5, 0.2,
                      "the xrun counted")
    time.sleep(1.5)
    at_once = card.speaker_since(resumed, 0.3, 1.3)
    speaker = card.speaker(2.0)
    after = call.box.status()
    _hang_up(call)
    assert set(states) == {"ok"}, f"the xrun was taken for a card gone: {states}"
    assert _xruns(status) >= 1
    assert after["state"] == "in_call" and after["audio"]["state"] == "ok", after["audio"]
    _tone(at_once, FAR_HZ, "the box's speaker within 1.3 s of the xrun")
    _tone(speaker, FAR_HZ, "the box's speaker after the xrun")
    _tone(_heard_by_phone(call, -2.5, -0.5), MIC_HZ, "baresip after the xrun")


def test_card_gone_mid_call_keeps_the_clock_and_is_reopened(asterisk, card, wire, intercom,
                                                            baresip, tmp_path) -> None:
    """jackd terminated mid-call (the dongle pulled): the call stays up, the box keeps sending
    every 20 ms, the status and the error LED say the card is gone; jackd started again under
    the same name: the box reopens the card and the far end reaches the room again."""
    call = _call(intercom, baresip, card, tmp_path)
    remote = call.box.status()["media"]["remote_port"]
    time.sleep(2)
    _tone(card.speaker(1.5), FAR_HZ, "the box's speaker before the card went")
    gone = time.monotonic()
    card.pull()
    wait_for(lambda: call.box.status()["audio"]["state"] == "error", 5, 0.2, "audio.state error")
    time.sleep(max(0.0, gone + 3.0 + SETTLE - time.monotonic()))
    sent, gap = _clock(wire, remote, gone, gone + 3.0)
    status = call.box.status()
    assert status["state"] == "in_call", status["state"]
    assert _legs_up(asterisk) == ["PJSIP/5001", "PJSIP/5002"], "the call is up in Asterisk"
    assert status["leds"]["error"] == "blinking", status["leds"]
    assert sent >= 140 and gap <= MAX_GAP, \
        f"RTP clock without the card: {sent} packets in 3 s, longest gap {gap * 1000:.0f} ms"
    back = time.monotonic()
    card.plug()
    wait_for(lambda: call.box.status()["audio"]["state"] == "ok", 8, 0.2,
             "audio.state ok once the card is back")
    took = time.monotonic() - back
    time.sleep(3)
    speaker = card.speaker(2.0)
    sent, gap = _clock(wire, remote, gone, time.monotonic() - SETTLE)
    status = call.box.status()
    _hang_up(call)
    assert status["state"] == "in_call" and status["leds"]["error"] != "blinking", status["leds"]
    assert gap <= MAX_GAP, f"RTP clock across the card's return: longest gap {gap * 1000:.0f} ms"
    _tone(speaker, FAR_HZ, f"the box's speaker once the card was back ({took:.1f} s)")
    _tone(_heard_by_phone(call, -2.5, -0.5), MIC_HZ, "baresip once the card was back")


def test_card_gone_refuses_new_calls_with_480_until_it_returns(asterisk, card, intercom,
                                                               baresip, tmp_path) -> None:
    """The card vanishes mid-call and the call ends while it is gone: a new call to the box is
    refused with 480; once the card is back the box says so and carries audio again."""
    call = _call(intercom, baresip, card, tmp_path)
    time.sleep(1)
    card.pull()
    wait_for(lambda: call.box.status()["audio"]["state"] == "error", 5, 0.2, "audio.state error")
    call.phone.command("hangup")
    call.phone.wait_event("CALL_CLOSED", 10)
    call.box.wait_state("idle")
    call.phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    call.phone.wait_event("CALL_CLOSED", 10)
    status = call.box.status()
    assert status["last_call_end"] == "rejected (480 Temporarily Unavailable)", status
    assert status["audio"]["state"] == "error" and status["leds"]["error"] == "blinking"
    # no device is open: none is named (the error says which could not be)
    assert status["audio"]["capture_device"] is None, status["audio"]
    card.plug()
    # idle, the box probes a missing card every 10 s (media_control.PROBE_EVERY)
    wait_for(lambda: call.box.status()["audio"]["state"] == "ok", 12, 0.2,
             "audio.state ok once the card is back")
    status = call.box.status()
    assert status["leds"]["error"] != "blinking"
    assert status["audio"]["capture_device"] == status["audio"]["playback_device"] == PCM, \
        f"the card the probe found: {status['audio']}"
    _dial(call.box, call.phone)
    time.sleep(3)
    speaker = card.speaker(2.0)
    _hang_up(call)
    _tone(speaker, FAR_HZ, "the box's speaker in a call after the card came back")
    _tone(_heard_by_phone(call, 1.0, -0.5), MIC_HZ, "baresip in a call after the card came back")
