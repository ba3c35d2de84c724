"""The one place events leave the box (``firmware.outbound``), on the box fakes: a consumer
subscribed to App's outbox sees every state change, the door opening and the call's end, in
order; a consumer that raises is logged and stops neither the others nor the call."""

from __future__ import annotations

from devtools.box.fakes import PBX_ADDR, FakeBox, run
from firmware.outbound import Kind, Notice
from firmware.sip.sdp import LocalMedia


def test_state_changes_the_door_and_the_call_end_leave_through_the_outbox() -> None:
    box = FakeBox()
    seen: list[Notice] = []

    def broken(notice: Notice) -> None:
        raise RuntimeError("a consumer that fails")

    box.app.outbox.subscribe(broken)
    box.app.outbox.subscribe(seen.append)

    async def scenario() -> None:
        await box.app.start()
        box.pump()
        box.board.press("call")
        box.pump()
        box.pbx.answer(LocalMedia(PBX_ADDR[0], 30000), box.clock.now)
        box.pump()
        box.media.sessions[0].deliver("1234")
        box.clock.run()
        assert box.board.pulses == [2.0]
        box.board.press("hangup")
        box.pump()
        assert box.app.state == "idle"

    run(scenario())
    kinds = [(n.kind, n.state) for n in seen]
    assert kinds == [(Kind.STATE, "idle"), (Kind.STATE, "calling"), (Kind.STATE, "in_call"),
                     (Kind.DOOR_OPENED, "in_call"), (Kind.CALL_ENDED, "in_call"),
                     (Kind.STATE, "idle")], kinds
    assert seen[0].summary == "idle, not registered"  # the fake box does not REGISTER
    assert seen[4].detail and seen[4].as_dict()["kind"] == "call_ended"
    assert all("1234" not in str(n.as_dict()) for n in seen), "never the door code"
