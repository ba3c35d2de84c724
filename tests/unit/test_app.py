"""The application driven whole, on fake I/O parts and a virtual clock (``devtools.box.fakes``:
App, the supervisor and the SIP user agent are real, a second sans-I/O user agent plays the
PBX): a call from the button with the door code, an incoming call over the control socket,
the ring timeout, registration and its refresh, and a start-up refused for what the build
lacks.
"""

from __future__ import annotations

import pytest

from devtools.box.fakes import PBX_ADDR, FakeBox, run
from firmware.events import CallAnswered, CallEnded, IncomingCall
from firmware.sip.message import parse_message
from firmware.sip.sdp import LocalMedia
from firmware.startup import StartupError


def test_button_call_door_code_and_hangup() -> None:
    box = FakeBox()

    async def scenario() -> None:
        await box.app.start()
        assert box.app.state == "idle" and box.board.leds["registered"] == "on"
        box.board.press("call")
        box.pump()
        assert box.sent_lines()[0] == "INVITE sip:5001@127.0.0.2 SIP/2.0"
        assert box.app.state == "calling" and box.board.leds["calling"] == "blink"
        incoming = [e for e in box.pbx_events if isinstance(e, IncomingCall)]
        assert len(incoming) == 1 and "5002" in incoming[0].remote
        assert box.from_pbx == ["SIP/2.0 100 Trying", "SIP/2.0 180 Ringing"]
        box.pbx.answer(LocalMedia(PBX_ADDR[0], 30000), box.clock.now)
        box.pump()
        assert box.app.state == "in_call" and box.board.leds["in_call"] == "on"
        assert box.sent_lines()[-1].startswith("ACK sip:")
        session = box.media.sessions[0]
        assert session.running and session.media[0].remote_addr == PBX_ADDR[0]
        assert session.media[0].remote_port == 30000 and session.media[0].codec == "PCMU"
        assert session.digit_fd in box.clock.readers, "App watches the digit wake-up fd"

        before = box.clock.now
        session.deliver("12")
        box.clock.run()
        assert box.board.pulses == [] and box.app.dtmf_keys == 2
        session.deliver("34")
        box.clock.run()
        assert box.board.pulses == [2.0], "the door code opened the door"
        assert box.app.door_openings == 1 and box.app.dtmf_keys == 4
        assert box.clock.now == before, "digits arrive by the fd, not by a timed poll"

        box.board.press("hangup")
        box.pump()
        assert "BYE" in box.sent_lines()[-1]
        assert box.app.state == "idle" and not session.running
        assert session.digit_fd not in box.clock.readers
        assert [type(e) for e in box.pbx_events][-1] is CallEnded
        assert box.board.leds == {**box.board.leds, "calling": "off", "in_call": "off"}
        await box.app.stop()

    run(scenario())


def test_incoming_call_answered_and_hung_up_through_the_control_socket() -> None:
    box = FakeBox()

    async def scenario() -> None:
        await box.app.start()
        box.pbx.make_call("sip:5002@127.0.0.1:5070", LocalMedia(PBX_ADDR[0], 30002),
                          box.clock.now)
        box.pump()
        assert box.app.state == "ringing" and box.board.leds["ringing"] == "blink"
        assert box.sent_lines() == ["SIP/2.0 100 Trying", "SIP/2.0 180 Ringing"]
        assert await box.controls.command(cmd="call") == {
            "ok": False, "error": "cannot call while ringing"}
        assert await box.controls.command(cmd="answer") == {"ok": True, "state": "in_call"}
        box.pump()
        assert box.sent_lines()[-1] == "SIP/2.0 200 OK"
        assert parse_message(box.wire[-1]).body.startswith(b"v=0")
        assert any(isinstance(e, CallAnswered) for e in box.pbx_events)
        assert box.app.state == "in_call"
        assert box.media.sessions[0].media[0].remote_port == 30002
        reply = await box.controls.command(cmd="dtmf", digits="*1")
        assert reply == {"ok": True, "queued": 2} and box.media.sessions[0].sent_dtmf == "*1"
        status = await box.controls.command(cmd="status")
        assert status["state"] == "in_call" and "5001" in status["remote"]
        assert await box.controls.command(cmd="hangup") == {"ok": True, "state": "idle"}
        box.pump()
        assert box.sent_lines()[-1].startswith("BYE sip:")
        assert box.app.state == "idle"
        assert await box.controls.command(cmd="answer") == {
            "ok": False, "error": "nothing to answer (state idle)"}
        assert (await box.controls.command(cmd="press", button="nope"))["ok"] is False
        await box.app.stop()

    run(scenario())


def test_unanswered_call_is_refused_when_the_ring_timer_fires() -> None:
    box = FakeBox()

    async def scenario() -> None:
        await box.app.start()
        box.pbx.make_call("sip:5002@127.0.0.1:5070", LocalMedia(PBX_ADDR[0], 30004),
                          box.clock.now)
        box.pump()
        assert box.app.state == "ringing"
        box.advance(19.0)
        assert box.app.state == "ringing", "calls.ring_timeout is 20 s"
        box.advance(1.5)
        assert "SIP/2.0 480 Temporarily Unavailable" in box.sent_lines()
        assert box.app.state == "idle" and box.board.leds["ringing"] == "off"
        await box.app.stop()

    run(scenario())


def test_registration_takes_the_box_from_offline_to_idle_and_is_refreshed() -> None:
    box = FakeBox(sip={"register": True})

    async def scenario() -> None:
        await box.app.start()
        box.clock.run()
        assert box.app.state == "offline" and box.board.leds["registered"] == "off"
        box.pump()
        assert [r.method for r in box.registrar.registers()] == ["REGISTER", "REGISTER"]
        assert box.registrar.check(box.registrar.registers()[1]), "the digest is right"
        assert box.app.state == "idle" and box.board.leds["registered"] == "on"
        assert box.board.leds["error"] == "off"
        assert (await box.controls.command(cmd="status"))["registered"] is True
        box.advance(150.0)
        refreshed = len(box.registrar.registers())
        box.advance(150.0)
        assert len(box.registrar.registers()) > refreshed >= 2, "re-registered before expiry"
        assert box.app.state == "idle"
        # not stopped here: stop() waits (on the real loop) for the un-REGISTER's answer

    run(scenario())


def test_an_echo_canceller_the_build_lacks_stops_the_start_naming_the_key() -> None:
    box = FakeBox()
    box.media.missing_canceller = "built without it"

    async def scenario() -> None:
        with pytest.raises(StartupError) as refused:
            await box.app.start()
        assert str(refused.value) == "audio.echo_canceller: speex: built without it"
        assert box.boards.board is None, "nothing after the media check was opened"

    run(scenario())
