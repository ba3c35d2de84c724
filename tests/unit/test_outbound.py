"""The building events (``firmware.outbound``) on the box fakes: one call through the real App,
supervisor and SIP user agents, told by the chronicle in order with the right fields: the
button, the call's start, answer and end (who ended it, how long), the door opened by DTMF and
by a command, wrong codes, the lockout and a command refused during it; the visitor log over
the control socket; systemd's status line; never a key in any event. A consumer that raises
stops neither the others nor the call."""

from __future__ import annotations

import json

from devtools.box.fakes import PBX_ADDR, FakeBox, run
from firmware.outbound import Event, Kind, Outbox
from firmware.outbound.visitor_log import VisitorLog, line
from firmware.sip.sdp import LocalMedia


def test_a_call_is_told_event_by_event_with_its_fields() -> None:
    box = FakeBox(calls={"door_code_max_failures": 2, "door_code_lockout": 60})
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("a consumer that fails")

    box.app.outbox.subscribe(broken)
    box.app.outbox.subscribe(seen.append)
    replies: list[dict] = []

    async def scenario() -> None:
        await box.app.start()
        box.pump()
        box.board.press("call")
        box.pump()
        box.pbx.answer(LocalMedia(PBX_ADDR[0], 30000), box.clock.now)
        box.pump()
        box.advance(3)
        box.media.sessions[0].deliver("1234")
        box.clock.run()
        replies.append(await box.controls.command(cmd="open_door"))
        box.media.sessions[0].deliver("9999")
        box.media.sessions[0].deliver("9999")
        box.clock.run()
        replies.append(await box.controls.command(cmd="open_door"))
        box.media.sessions[0].deliver("1234")
        box.clock.run()
        assert box.board.pulses == [2.0, 2.0], "the lockout held the relay"
        box.board.press("hangup")
        box.pump()
        assert box.app.state == "idle"
        box.advance(61)
        replies.append(await box.controls.command(cmd="events"))

    run(scenario())
    told = [e for e in seen if e.kind is not Kind.STATE]
    kinds = [e.kind for e in told]
    assert kinds == [Kind.BUTTON_PRESSED, Kind.CALL_STARTED, Kind.CALL_RINGING,
                     Kind.CALL_ANSWERED, Kind.DOOR_OPENED, Kind.DOOR_OPENED, Kind.COMMAND,
                     Kind.WRONG_CODE, Kind.WRONG_CODE, Kind.LOCKOUT_STARTED, Kind.COMMAND,
                     Kind.CODE_DURING_LOCKOUT, Kind.BUTTON_PRESSED, Kind.CALL_ENDED,
                     Kind.LOCKOUT_ENDED], kinds
    press, started, ringing, answered, by_dtmf, by_command, accepted = told[:7]
    assert ringing.peer == "5001"
    assert (press.button, press.action, press.target) == ("call", "call", "5001")
    assert (started.direction, started.peer) == ("outgoing", "5001")
    assert answered.state == "in_call" and answered.peer == "5001"
    assert (by_dtmf.by, by_dtmf.via, by_dtmf.peer, by_dtmf.seconds) == ("dtmf", "rtp", "5001",
                                                                          2.0)
    assert by_command.by == "control"
    assert (accepted.by, accepted.command, accepted.accepted) == ("control", "open_door", True)
    first, second, lockout, refused = told[7:11]
    assert (first.failures, second.failures, second.max_failures) == (1, 2, 2)
    assert lockout.seconds == 60 and lockout.until is not None
    assert refused.accepted is False and "locked" in (refused.reason or "")
    assert replies[1]["ok"] is False
    assert told[12].button == "hangup"
    ended = told[13]
    assert (ended.ended_by, ended.direction, ended.peer) == ("button", "outgoing", "5001")
    assert ended.duration is not None and ended.duration >= 3
    seqs = [e.seq for e in seen]
    assert seqs == list(range(1, len(seen) + 1)), "numbered without gaps, in order"
    states = [e.snapshot for e in seen if e.kind is Kind.STATE]
    assert any(s and s["door_open"] for s in states) and states[-1]["door_open"] is False
    assert any(s and s["door_locked"] for s in states)
    assert [s["state"] for s in states if s][:3] == ["idle", "calling", "in_call"]
    log = replies[2]["events"]
    assert [e["kind"] for e in log] == [k.value for k in kinds], "the visitor log"
    everything = json.dumps([e.as_dict() for e in seen]) + json.dumps(replies)
    assert "1234" not in everything and "9999" not in everything, "never a key"


def test_a_call_by_command_ended_by_command_is_told_with_who_sent_them() -> None:
    box = FakeBox()
    seen: list[Event] = []
    box.app.outbox.subscribe(seen.append)

    async def scenario() -> None:
        await box.app.start()
        box.pump()
        await box.controls.command(cmd="call", target="5009")
        box.pump()
        box.pbx.answer(LocalMedia(PBX_ADDR[0], 30000), box.clock.now)
        box.pump()
        await box.controls.command(cmd="hangup")
        box.pump()

    run(scenario())
    told = [(e.kind, e.by, e.ended_by) for e in seen if e.kind is not Kind.STATE]
    assert told == [(Kind.CALL_STARTED, None, None), (Kind.COMMAND, "control", None),
                    (Kind.CALL_RINGING, None, None), (Kind.CALL_ANSWERED, None, None),
                    (Kind.CALL_ENDED, None, "control"),
                    (Kind.COMMAND, "control", None)], told
    commands = [(e.command, e.target, e.accepted) for e in seen if e.kind is Kind.COMMAND]
    assert commands == [("call", "5009", True), ("hangup", None, True)]


def test_the_outbox_numbers_skips_repeated_state_and_bounds_the_log() -> None:
    outbox = Outbox(keep=3, wallclock=lambda: 1000.0)
    assert outbox.emit(Kind.STATE, "idle", snapshot={"a": 1}) is not None
    assert outbox.emit(Kind.STATE, "idle", snapshot={"a": 1}) is None, "the same state again"
    for _ in range(5):
        outbox.emit(Kind.LOCKOUT_ENDED, "idle")
    assert len(outbox.log) == 3
    assert [e["seq"] for e in outbox.log.recent()] == [4, 5, 6]
    assert outbox.log.recent(0) == [] and len(outbox.log.recent(2)) == 2
    text = line({"time": 1000.0, "seq": 7, "kind": "door_opened", "by": "dtmf", "via": "rtp",
                 "peer": "Reception <sip:5001@pbx>"})
    assert text.endswith("  #7 door_opened peer='Reception <sip:5001@pbx>' by=dtmf via=rtp")
    VisitorLog(1).add(Event(Kind.STATE, 1, 0.0, "r", "idle"))  # a state change is not kept
