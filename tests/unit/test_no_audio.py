"""No half-calls without audio: with the sound card missing the call button is refused (no
INVITE), the error LED blinks and status says why; a card that comes back is used at the next
press without waiting for the periodic probe."""

from __future__ import annotations

from typing import Any

import firmware.supervisor as sv
from devtools.box.fakes import FakeAudio, FakeBox, run
from firmware.media.audio import AudioError


class MissingCard(FakeAudio):
    """An ALSA device name whose probe fails until ``plugged`` (the App's own probing)."""

    def __init__(self) -> None:
        self.plugged = False

    def is_device(self, spec: str) -> bool:
        return True

    def probe(self, spec: str, capture: bool) -> str:
        if not self.plugged:
            raise AudioError(f"audio device {spec!r} not found")
        return spec

    def open(self, spec: str, capture: bool) -> Any:
        self.probe(spec, capture)
        return super().open(spec, capture)


def test_the_call_button_is_refused_without_a_sound_card() -> None:
    box = FakeBox()
    card = MissingCard()
    box.app.media_control.audio = card

    async def scenario() -> None:
        await box.app.start()
        assert box.board.leds["error"] == "fast"
        box.board.press("call")
        box.pump()
        assert not any(line.startswith("INVITE") for line in box.sent_lines()), "no INVITE"
        assert box.app.state == "idle" and box.board.leds["calling"] == "off"
        st = box.app.status()
        assert st["last_error"] and "audio device unavailable" in st["last_error"]
        assert box.board.leds["error"] == "fast"
        reply = await box.controls.command(cmd="call")
        assert reply["ok"] is False and "audio device unavailable" in reply["error"]
        reply = await box.controls.command(cmd="press", button="call")
        assert reply["ok"] is False and "audio device unavailable" in reply["error"]

        card.plugged = True  # plugged in between two probes: the next press probes again
        box.board.press("call")
        box.pump()
        assert box.sent_lines()[-1].startswith("INVITE sip:5001@")
        assert box.app.state == "calling" and box.app.status()["last_error"] is None
        await box.app.stop()

    run(scenario())


def test_supervisor_refusal_is_a_fault_with_the_reason() -> None:
    s = sv.Supervisor(sv.Policy(register=False))
    s.handle(sv.AudioFailed("capture device 'usb' not found"))
    cmds = s.handle(sv.UserCall("5001"))
    refused = [c for c in cmds if isinstance(c, sv.Refused)]
    assert refused == [sv.Refused("call refused: audio device unavailable (capture device "
                                  "'usb' not found)", fault=True)]
    assert not any(isinstance(c, sv.Dial) for c in cmds) and s.state == "idle"
    assert s.handle(sv.UserCall("5001"), 1.0)[0] == refused[0]
    s.handle(sv.AudioRecovered())
    assert any(isinstance(c, sv.Dial) for c in s.handle(sv.UserCall("5001")))
