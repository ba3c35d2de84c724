"""The reception console (web/) in a real Chromium against a real Asterisk 22 and the door box
(in-process with gpiozero's MockFactory and real alsa-lib): ringing, answering, audio both ways
judged by FFT, the door code through the browser's RTCDTMFSender, calling the door, hang-ups
from either side, and surviving an Asterisk restart."""

from __future__ import annotations

import os
import time

import pytest

from devtools.box.in_process import toggles
from devtools.paths import REPO
from devtools.waiting import wait_for

from ..audio import pcm_array, peak_hz
from ..integration.alsa_env import reset_speaker, speaker_pcm, write_mic_tone
from .conftest import CONSOLE_TONE_HZ
from .netcut import CuttableRelay

pytestmark = pytest.mark.integration
BOX_TONE_HZ = 700


def test_call_button_rings_the_console_and_both_sides_hear(asterisk, box, console,
                                                          baresip) -> None:
    write_mic_tone(BOX_TONE_HZ)
    reset_speaker()
    desk = baresip("5001")  # the desk phone rings too: the ring group
    page = console()
    page.wait_status("registered")
    b = box()
    b.wait_state("idle")
    b.press("call")
    caller = page.wait_ringing()
    assert "5002" in caller and "Door" in caller
    desk.wait_event("CALL_INCOMING", 10)
    assert page.enabled("answer") and not page.enabled("open-door")
    page.click("answer")
    page.wait_event("established")
    desk.wait_event("CALL_CLOSED", 10)  # the console took the call: the desk phone stops
    b.wait_state("in_call")
    time.sleep(4)
    media = page.media()
    assert media["dtlsState"] == "connected" and media["srtpCipher"], media  # DTLS-SRTP
    assert media["sendCodec"] in ("audio/PCMU", "audio/PCMA"), media  # no transcoding
    assert media["receiveCodec"] == media["sendCodec"], media
    assert media["local"].startswith("127.0.0.1:"), media
    assert all(c.startswith("127.0.0.1:") for c in media["remoteCandidates"]), media
    heard_hz = page.audio("remotePeakHz")
    assert abs(heard_hz - BOX_TONE_HZ) < 15, f"the console heard {heard_hz:.0f} Hz"
    assert page.audio("remoteLevel") > 0.01 and page.audio("micLevel") > 0.01
    assert abs(page.audio("micPeakHz") - CONSOLE_TONE_HZ) < 15
    page.click("hangup")
    st = b.wait_state("idle")
    assert st["last_call_end"] == "remote hangup"
    page.wait_event("ended")
    heard = pcm_array(speaker_pcm())
    assert len(heard) > 8000 * 3
    box_heard = peak_hz(heard[8000:])
    assert abs(box_heard - CONSOLE_TONE_HZ) < 15, f"the box heard {box_heard:.0f} Hz"
    assert any("you hung up" in e for e in page.log_entries())


def answered_call(box, page):
    """The box's call button rings the console, which answers: (box, page) in a call."""
    page.wait_status("registered")
    b = box()
    b.wait_state("idle")
    b.press("call")
    page.wait_ringing()
    page.click("answer")
    page.wait_event("established")
    b.wait_state("in_call")
    return b


def test_open_door_pulses_the_relay(asterisk, box, console, tmp_path) -> None:
    write_mic_tone(BOX_TONE_HZ)
    page = console()
    b = answered_call(box, page)
    relay = b.pin("relay")
    assert not relay.state
    since = len(relay.states)
    time.sleep(1)  # media flowing both ways before the first digit
    page.click("open-door")
    wait_for(lambda: relay.state, 10, 0.01, "the door relay")
    wait_for(lambda: not relay.state, 3, 0.02, "the relay pulse to end")
    assert toggles(relay, since) == 2, "one pulse"
    assert b.status()["door_openings"] == 1
    assert any("door code sent" in e for e in page.log_entries())
    # the visitor hangs up: the console's call ends
    b.press("hangup")
    ended = page.wait_event("ended")
    assert ended["outcome"] == "answered, they hung up"
    assert not page.enabled("hangup") and not page.enabled("open-door")
    assert page.enabled("call-door")
    # the next visitor gives up while the console rings: a missed call in the log
    b.wait_state("idle")
    n = page.event_count()
    b.press("call")
    page.wait_ringing()
    # into the test's folder: a run must not change a tracked file (INTERCOM_SCREENSHOT=1
    # refreshes the README's picture, web/screenshot.png)
    shot = REPO / "web" if os.environ.get("INTERCOM_SCREENSHOT") == "1" else tmp_path
    page.page.screenshot(path=str(shot / "screenshot.png"))
    # the box's own dial-plan context answers nothing first: it is "calling" while the console
    # rings, and its hangup button cancels the call
    b.wait_state("calling")
    b.press("hangup")
    assert page.wait_event("ended", since=n)["outcome"] == "missed"
    assert page.page.is_hidden("#incoming")
    assert not page.page.evaluate("window.consoleAudio.ringing()")
    log = page.log_entries()
    assert "missed" in log[0] and "they hung up" in log[1], log


def test_a_wrong_code_does_not_open_the_door(asterisk, box, console) -> None:
    write_mic_tone(BOX_TONE_HZ)
    page = console(code="*2")
    b = answered_call(box, page)
    relay = b.pin("relay")
    since = len(relay.states)
    keys = b.status()["dtmf_keys_received"]
    time.sleep(1)
    page.click("open-door")
    # status counts received keys, never shows them (they may be the door code)
    wait_for(lambda: b.status()["dtmf_keys_received"] >= keys + 2, 10, 0.05,
             "the box to receive the console's two keys")
    time.sleep(1.5)
    assert toggles(relay, since) == 0 and not relay.state, "the relay stayed closed"
    assert b.status()["door_openings"] == 0
    page.click("hangup")
    b.wait_state("idle")


def test_call_door_reaches_the_box(asterisk, box, console) -> None:
    write_mic_tone(BOX_TONE_HZ)
    reset_speaker()
    page = console()
    page.wait_status("registered")
    b = box()
    b.wait_state("idle")
    page.click("call-door")
    st = b.wait_state("ringing")
    assert "5004" in st["remote"]
    assert page.enabled("hangup") and not page.enabled("answer")
    b.press("answer")
    page.wait_event("established")
    b.wait_state("in_call")
    time.sleep(3)
    assert abs(page.audio("remotePeakHz") - BOX_TONE_HZ) < 15
    b.press("hangup")
    assert page.wait_event("ended")["outcome"] == "answered, they hung up"
    heard = pcm_array(speaker_pcm())
    assert abs(peak_hz(heard[8000:]) - CONSOLE_TONE_HZ) < 15
    # calling again and giving up before the box answers cancels the box's ringing
    b.wait_state("idle")
    n = page.event_count()
    page.click("call-door")
    b.wait_state("ringing")
    page.wait_event("progress", since=n)  # 180 Ringing reached the console
    assert page.page.text_content("#call-state") == "Ringing at 5002..."
    page.click("hangup")
    assert page.wait_event("ended", since=n)["outcome"] == "cancelled"
    b.wait_state("idle")
    assert page.log_entries()[0].endswith("to 5002 - cancelled")


def test_console_survives_an_asterisk_restart(asterisk, box, console) -> None:
    write_mic_tone(BOX_TONE_HZ)
    page = console()
    page.wait_status("registered")
    b = box(sip={"keepalive_interval": 1})
    b.wait_state("idle")
    asterisk.stop()
    assert "lost" in page.wait_status("error")
    time.sleep(2)
    asterisk.start()
    assert page.wait_status("registered", 40) == "registered as 5004"
    wait_for(lambda: asterisk.registered("5004"), 10, 0.2, "5004 in pjsip show contacts")
    b.wait_state("idle", 30)
    b.press("call")
    assert "5002" in page.wait_ringing()
    page.click("answer")
    page.wait_event("established")
    page.click("hangup")
    b.wait_state("idle")


def test_console_reconnects_after_a_silent_network_loss(asterisk, box, console) -> None:
    write_mic_tone(BOX_TONE_HZ)
    relay = CuttableRelay(asterisk.http_port)
    try:
        page = console(server=f"ws://127.0.0.1:{relay.port}/ws")
        page.wait_status("registered")
        b = box()
        b.wait_state("idle")
        n = page.event_count()
        relay.cut()  # the WebSocket still looks open to the browser
        lost = page.wait_event("status", since=n, timeout=40)
        assert lost["state"] == "error" and "no answer from" in lost["text"], lost
        time.sleep(3)  # reconnecting into the void meanwhile
        relay.restore()
        page.wait_status("registered", 40)
        wait_for(lambda: asterisk.registered("5004"), 10, 0.2, "5004 registered again")
        b.press("call")
        assert "5002" in page.wait_ringing()
        page.click("hangup")
        b.press("hangup")
        b.wait_state("idle")
    finally:
        relay.close()
