"""After a rollback the error LED blinks slowly until the next good update or an acknowledgement:
the supervisor's rule, and the App reading the updater's real state file (the box on fakes of
devtools.box.fakes: the App on fake I/O parts and a virtual clock, a sans-I/O registrar)."""

from __future__ import annotations

from pathlib import Path

from devtools.box.fakes import FakeBox, run
from firmware import supervisor as sv
from firmware.update.state import Store

from .test_supervisor import leds, make

WHY = "rolled back from 1.2.0 to 1.1.0: the PBX answered but it did not register"


def test_the_alert_blinks_slowly_only_while_nothing_worse_is_wrong() -> None:
    s = make()  # registered, idle
    cmds = s.handle(sv.UpdateAlert(WHY))
    assert leds(cmds) == {"error": "slow"}
    assert sv.Log("warning", f"update rolled back: {WHY} (the error LED blinks slowly until "
                             "`intercom update --ack`)") in cmds
    assert leds(s.handle(sv.RegistrationDown("gone"))) ["error"] == "fast", "a fault wins"
    assert "error" not in leds(s.handle(sv.UpdateAlert(WHY + "!"))), "no change under a fault"
    assert leds(s.handle(sv.RegistrationUp()))["error"] == "slow", "the fault's end shows it"
    assert leds(s.handle(sv.UpdateAlert(None))) == {"error": "off"}
    assert s.state == "idle"


def test_the_alert_waits_for_the_first_registration() -> None:
    s = sv.Supervisor(sv.Policy())
    assert leds(s.start())["error"] == "off"
    assert "error" not in leds(s.handle(sv.UpdateAlert(WHY))), "offline at start: unchanged"
    assert leds(s.handle(sv.RegistrationUp()))["error"] == "slow"
    s.handle(sv.Incoming("reception"))
    assert leds(s.handle(sv.UpdateAlert(None)))["error"] == "off", "in every state"


def test_the_app_follows_the_state_file(tmp_path: Path) -> None:
    folder = tmp_path / "update"
    store = Store(folder)
    store.record("rolled_back", "register", "1.2.0", WHY, now=1.0)
    box = FakeBox(sip={"register": True}, update={"state_dir": str(folder)})

    async def scenario() -> None:
        await box.app.start()
        box.pump()
        assert box.app.state == "idle" and box.board.leds["error"] == "slow"
        status = await box.controls.command(cmd="status")
        assert status["registrar_answer"] == 200
        with store.modify() as state:  # intercom update --ack
            state["last"]["acknowledged"] = True
        box.advance(10.0)
        assert box.board.leds["error"] == "off"
        store.record("rolled_back", "boots", "1.3.0", "rolled back from 1.3.0", now=2.0)
        box.advance(10.0)
        assert box.board.leds["error"] == "slow"
        store.record("ok", "registered", "1.3.1", "1.3.1 is good", now=3.0)
        box.advance(10.0)
        assert box.board.leds["error"] == "off"
        store.record("rolled_back", "boots", "1.4.0", "rolled back from 1.4.0", now=4.0)
        (folder / "state.json").unlink()
        (folder / "state.json").mkdir()  # unreadable: no alert, no crash
        box.advance(10.0)
        assert box.board.leds["error"] == "off" and box.app.state == "idle"

    run(scenario())


def test_the_status_tells_a_refusing_pbx_from_a_silent_one() -> None:
    box = FakeBox(sip={"register": True})
    box.registrar.custom = lambda req: box.registrar._reply(req, "403 Forbidden") \
        if req.method == "REGISTER" else None

    async def scenario() -> None:
        await box.app.start()
        box.pump()
        assert (await box.controls.command(cmd="status"))["registrar_answer"] == 403
        box.registrar.answer = lambda req: None  # type: ignore[method-assign]  # silent
        box.advance(60.0)  # the retry goes unanswered: timeout
        status = await box.controls.command(cmd="status")
        assert status["registrar_answer"] is None and not status["registered"]

    run(scenario())
