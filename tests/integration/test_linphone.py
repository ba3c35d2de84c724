"""linphonec — the seed's SIP client on the Pi — as the reception phone 5001 on a real Asterisk:
the box calls it and it answers, it calls the box and the box answers; audio both ways judged
by FFT (linphonec plays a WAV as its microphone and records what it hears, paced by
mediastreamer2's clock; the box's ALSA side is the tests' file PCMs); linphonec's DTMF opens
the door and its wrong codes count towards the lockout; with Asterisk's direct media the box
and linphonec exchange RTP directly, across linphonec's hold and resume."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.asterisk import PASSWORDS, Asterisk
from devtools.linphone import Linphone
from devtools.tones import tone_wav
from devtools.waiting import wait_for

from ..audio import pcm_array, peak_hz, wav_array
from .alsa_env import reset_speaker, speaker_pcm, write_mic_tone

pytestmark = pytest.mark.integration


@pytest.fixture
def linphone(tmp_path: Path, asterisk: Asterisk) -> Iterator[Callable[..., Linphone]]:
    """linphonec phones registered to the calling test's ``asterisk``."""
    started: list[Linphone] = []

    def make(ext: str = "5001", **kw: Any) -> Linphone:
        phone = Linphone(asterisk.port, ext, PASSWORDS[ext],
                         tmp=tmp_path / f"linphone-{ext}-{len(started)}", **kw)
        started.append(phone)
        return phone.start()

    yield make
    for phone in started:
        phone.stop()


def heard_by(phone: Linphone, seconds: float = 2.5) -> float:
    """The strongest frequency in the last ``seconds`` linphonec recorded."""
    assert phone.record_wav is not None
    y, rate = wav_array(phone.record_wav)
    assert len(y) > rate * seconds, f"linphonec recorded {len(y) / rate:.1f} s"
    return peak_hz(y[-int(rate * seconds):], rate)


def test_the_box_calls_linphone(asterisk, box, linphone, tmp_path: Path) -> None:
    write_mic_tone(700)
    reset_speaker()
    phone = linphone(play_wav=tone_wav(tmp_path / "1000.wav", 1000, 30, rate=8000),
                     record_wav=tmp_path / "heard.wav", auto_answer=True)
    b = box()
    b.wait_state("idle")
    b.press("call")
    phone.wait_output(r"Receiving new incoming call from [^\n]*5002", 15)
    phone.wait_output(r"Media streams established", 10)
    b.wait_state("in_call")
    time.sleep(3)
    phone.command("terminate")
    phone.wait_output(r"Call \d+ with [^\n]* ended", 10)
    st = b.wait_state("idle")
    assert st["last_call_end"] == "remote hangup"
    heard = pcm_array(speaker_pcm())
    assert len(heard) > 8000 * 2
    assert abs(peak_hz(heard[8000:]) - 1000) < 15, "the speaker played linphonec's 1000 Hz"
    assert abs(heard_by(phone) - 700) < 15, "linphonec heard the door's microphone"
    assert st["rtp"]["received"] > 100


def test_linphone_calls_the_box_and_keys_the_door_code(asterisk, box, linphone,
                                                       tmp_path: Path) -> None:
    write_mic_tone(600)
    reset_speaker()
    phone = linphone(play_wav=tone_wav(tmp_path / "1200.wav", 1200, 30, rate=8000),
                     record_wav=tmp_path / "heard.wav")
    b = box(calls={"door_code": "*1", "door_code_max_failures": 2})
    b.wait_state("idle")
    phone.command(f"call sip:5002@127.0.0.1:{asterisk.port}")
    b.wait_state("ringing")
    b.press("answer")
    st = b.wait_state("in_call")
    assert "5001" in st["remote"]
    time.sleep(2)

    phone.dtmf("*1")  # the right code opens the door
    wait_for(lambda: b.pin("relay").state, 10, 0.02, "the door relay")
    assert b.status()["door_openings"] == 1
    wait_for(lambda: not b.pin("relay").state, 3, 0.02, "the relay pulse to end")

    phone.dtmf("99")  # a wrong code: counted, not yet locked
    wait_for(lambda: b.status()["dtmf_keys_received"] >= 4, 10, 0.05, "4 keys")
    assert b.status()["door_lockout_until"] is None
    phone.dtmf("88")  # the second wrong code within the window: locked
    st = wait_for(lambda: (s := b.status())["door_lockout_until"] and s, 10, 0.05,
                  "the lockout")
    assert st["leds"]["error"] == "blinking"
    phone.dtmf("*1")  # the right code during the lockout does nothing
    wait_for(lambda: b.status()["dtmf_keys_received"] >= 8, 10, 0.05, "8 keys")
    time.sleep(0.5)
    assert not b.pin("relay").state and b.status()["door_openings"] == 1

    phone.command("terminate")
    assert b.wait_state("idle")["last_call_end"] == "remote hangup"
    heard = pcm_array(speaker_pcm())
    assert len(heard) > 8000 * 3
    assert abs(peak_hz(heard[8000:]) - 1200) < 15, "the speaker played linphonec's 1200 Hz"
    assert abs(heard_by(phone) - 600) < 15, "linphonec heard the door's microphone"


@pytest.mark.direct_media
def test_direct_media_between_the_box_and_linphone(asterisk, box, linphone,
                                                   tmp_path: Path) -> None:
    """Asterisk re-INVITEs both legs so that RTP flows box <-> linphonec: each side takes the
    other's SDP (relayed by Asterisk), the audio still arrives both ways after linphonec's hold
    and resume, and linphonec's own RFC 4733 events open the door."""
    write_mic_tone(800)
    reset_speaker()
    # 1013 Hz, not a multiple of 100: G.711 turns a tone on the 100 Hz grid (900) into lines
    # 100 Hz apart, one of them exactly on the box's 800 Hz, and speex cancels the visitor's
    # steady tone against that coherent trace in its reference (faded out in 1 run of 6)
    phone = linphone(play_wav=tone_wav(tmp_path / "1013.wav", 1013, 30, rate=8000),
                     record_wav=tmp_path / "heard.wav", auto_answer=True)
    b = box()
    b.wait_state("idle")
    b.press("call")
    phone.wait_output(r"Media streams established", 15)
    st = b.wait_state("in_call")
    wait_for(lambda: b.status()["media"]["remote_port"] == phone.rtp_port, 10, 0.1,
             "the box's media to move to linphonec's own RTP port")
    time.sleep(3)
    phone.command("pause")  # linphonec holds the call (re-INVITE, a=sendonly) and resumes it
    phone.wait_output(r"Call \d+ with [^\n]* is now paused", 10)
    phone.command("resume")
    phone.wait_output(r"Resuming call", 10)
    time.sleep(2)
    phone.dtmf("*1")  # RFC 4733 straight from linphonec's RTP stream
    wait_for(lambda: b.pin("relay").state, 10, 0.02, "the door relay")
    # linphonec plays each key it sends into its own recording (941/697 + 1209 Hz, louder
    # than the box's tone): the windows judged below must start after the last key's
    time.sleep(3.5)
    phone.command("terminate")
    st = b.wait_state("idle")
    assert st["last_call_end"] == "remote hangup" and st["door_openings"] == 1
    heard = pcm_array(speaker_pcm())
    assert abs(peak_hz(heard[-8000 * 2:]) - 1013) < 15, "the box heard linphonec after resume"
    assert abs(heard_by(phone) - 800) < 15, "linphonec heard the box after resume"
