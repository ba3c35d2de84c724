"""No half-calls without audio: a real ``intercom run`` whose ALSA capture device does not
exist refuses its call button (no INVITE leaves the box, reception's phone never rings), says
why in status and over the control socket, and blinks the error LED."""

from __future__ import annotations

import pytest

from devtools.waiting import wait_for

pytestmark = pytest.mark.integration


def test_call_button_without_a_sound_card_sends_no_invite(asterisk, intercom, baresip) -> None:
    phone = baresip("5001", answer="auto")
    box = intercom(audio={"capture": "no_such_pcm", "playback": "null"})  # debug log
    st = box.wait_state("idle")
    assert st["audio"]["state"] == "error" and "no_such_pcm" in st["audio"]["error"]
    assert st["leds"]["error"] == "blinking"

    reply = box.cmd("press", "call")
    assert reply.get("ok") is False and "audio device unavailable" in str(reply), reply
    reply = box.cmd("call", "5001")
    assert reply.get("ok") is False and "audio device unavailable" in str(reply), reply
    st = box.status()
    assert st["state"] == "idle" and st["leds"]["calling"] == "off"
    assert st["last_error"].startswith("call refused: audio device unavailable")
    assert st["leds"]["error"] == "blinking"
    with pytest.raises(AssertionError, match="no CALL_INCOMING"):
        phone.wait_event("CALL_INCOMING", 2)  # reception's phone does not ring
    assert "\nINVITE sip:" not in box.log(), "the box sent an INVITE"
    assert "send to" in box.log(), "the debug log shows what the box sends (REGISTER)"
    wait_for(lambda: asterisk.registered("5002"), 5, 0.1, "the box still registered")
