"""The control socket's command table (``firmware.commands``) on the box fakes: each command
becomes its supervisor event, a state without a row refuses with the supervisor's reason, and
the requests no event can express are answered with what is wrong."""

from __future__ import annotations

from devtools.box.fakes import FakeBox, run
from firmware import commands


def test_every_user_command_is_a_row_and_only_status_events_and_dtmf_are_queries() -> None:
    assert set(commands.EVENTS) == {"call", "answer", "hangup", "press", "open_door"}
    assert set(commands.QUERIES) == {"status", "events", "dtmf"}


def test_commands_become_supervisor_events_or_are_refused_with_a_reason() -> None:
    box = FakeBox()

    async def scenario() -> None:
        await box.app.start()
        box.pump()
        assert box.app.state == "idle"
        ask = box.controls.command
        assert await ask(cmd="reboot") == {"ok": False, "error": "unknown command 'reboot'"}
        reply = await ask(cmd="press", button="doorbell")
        assert reply["ok"] is False and reply["error"].startswith("no button 'doorbell'")
        assert "call" in reply["error"]
        assert await ask(cmd="dtmf", digits="1") == {"ok": False,
                                                     "error": "DTMF needs a call with media"}
        refused = await ask(cmd="answer")
        assert refused["ok"] is False and refused["error"], "idle: nothing rings to answer"
        assert box.app.state == "idle"
        assert await ask(cmd="call", target="5009") == {"ok": True, "state": "calling"}
        box.pump()
        assert box.sent_lines()[-1].startswith("INVITE sip:5009@")
        assert (await ask(cmd="hangup"))["ok"] is True
        box.pump()
        assert any(line.startswith("CANCEL sip:5009@") for line in box.sent_lines())
        status = await ask(cmd="status")
        assert status["ok"] is True and status["state"] == "idle"

    run(scenario())
