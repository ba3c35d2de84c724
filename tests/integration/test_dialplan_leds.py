"""The box's own calls through the shipped pbx/ configuration: Asterisk must not answer the
box before a person does (pbx/extensions.conf [door]), so the visitor's `calling` LED blinks
while reception rings and `in_call` lights only when reception picks up. The echo test (600)
still answers the box; with nobody registered at reception the box hears a refusal."""

from __future__ import annotations

import time

import pytest

from devtools.waiting import wait_for

pytestmark = pytest.mark.integration


def test_calling_until_reception_answers(asterisk, intercom, baresip) -> None:
    phone = baresip("5001")  # answers only when told
    box = intercom(log_level="info")
    box.wait_state("idle")
    assert box.cmd("press", "call")["ok"]
    phone.wait_event("CALL_INCOMING", 10)
    for _ in range(3):  # reception rings for a few seconds; Answer(500) would show in 0.5 s
        st = box.status()
        assert st["state"] == "calling", st["state"]
        assert st["leds"]["calling"] == "blinking" and st["leds"]["in_call"] == "off", st["leds"]
        time.sleep(1)
    phone.command("accept")
    phone.wait_event("CALL_ESTABLISHED", 10)
    st = box.wait_state("in_call")
    assert st["leds"]["in_call"] == "on" and st["leds"]["calling"] == "off", st["leds"]
    wait_for(lambda: (box.status()["rtp"] or {}).get("received", 0) > 20, 10, 0.2,
             "audio from reception")
    phone.command("hangup")
    st = box.wait_state("idle")
    assert st["last_call_end"] == "remote hangup" and st["leds"]["in_call"] == "off"


def test_nobody_at_reception_is_a_refusal_not_a_call(asterisk, intercom) -> None:
    box = intercom(log_level="info")
    box.wait_state("idle")
    assert box.cmd("press", "call")["ok"]
    st = box.wait_state("idle", 10)
    assert "480" in st["last_call_end"], st["last_call_end"]
    assert "call with 5001 established" not in box.log(), "Asterisk answered the box itself"


def test_the_echo_test_still_answers_the_box(asterisk, intercom) -> None:
    box = intercom(log_level="info", audio={"capture": "tone:700"})
    box.wait_state("idle")
    assert box.cmd("call", "600")["ok"]
    box.wait_state("in_call", 10)
    wait_for(lambda: (box.status()["rtp"] or {}).get("received", 0) > 20, 10, 0.2,
             "the echo coming back")
    assert box.cmd("hangup")["ok"]
    box.wait_state("idle")
