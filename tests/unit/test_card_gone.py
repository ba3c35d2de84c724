"""A sound card that goes during a call (the card loop's eventfd says so): the call stays up,
the error LED blinks, status says why, new calls are refused; the card is retried every 1.5 s
off the media loop, and once the loop has adopted it again the error clears. App and the
supervisor are real; the media session is a fake whose card the test takes away and brings
back (the real session and loop: tests/integration/test_card_loop.py).
"""

from __future__ import annotations

import os
from typing import Any

from devtools.box.fakes import PBX_ADDR, FakeAudio, FakeBox, FakeMedia, FakeSession, run
from firmware.media.audio import AudioError
from firmware.sip.sdp import LocalMedia


class CardSession(FakeSession):
    """A session whose loop drives a card: ``lose()``/``back()`` as the loop would report."""

    def __init__(self, source: Any, sink: Any) -> None:
        super().__init__(source, sink)
        self.card_fd = os.eventfd(0, os.EFD_NONBLOCK)
        self.state = "ok"
        self.reopens = 0

    def lose(self) -> None:
        self.state = "gone"
        os.eventfd_write(self.card_fd, 1)

    def back(self) -> None:
        self.state = "ok"
        os.eventfd_write(self.card_fd, 1)

    def card_state(self) -> str:
        try:
            os.eventfd_read(self.card_fd)
        except BlockingIOError:
            pass
        return self.state

    def reopen_card(self) -> bool:
        self.reopens += 1
        return False

    def stats(self) -> dict[str, Any]:
        return {"ticks": 1, "card": self.state, "card_error": 19, "audio_xruns": 2}


class CardMedia(FakeMedia):
    def session(self, ports: Any, source: Any, sink: Any, settings: Any,
                cname: str) -> FakeSession:
        self.sessions.append(CardSession(source, sink))
        return self.sessions[-1]


async def card_call(box: FakeBox, media: CardMedia) -> CardSession:
    """The box started, its call button pressed and the call answered: the call's session."""
    await box.app.start()
    box.board.press("call")
    box.pump()
    box.pbx.answer(LocalMedia(PBX_ADDR[0], 30000), box.clock.now)
    box.pump()
    assert box.app.state == "in_call"
    session = media.sessions[0]
    assert isinstance(session, CardSession)
    return session


def test_a_card_that_goes_mid_call_keeps_the_call_and_comes_back() -> None:
    box = FakeBox()
    box.app.media_control.parts = media = CardMedia()

    async def scenario() -> None:
        session = await card_call(box, media)
        assert session.card_fd in box.clock.readers
        assert box.app.status()["audio"]["card"] == "ok"

        session.lose()
        box.advance(0.1)
        status = box.app.status()
        assert box.app.state == "in_call" and not any("BYE" in line
                                                       for line in box.sent_lines())
        assert box.board.leds["error"] == "fast"
        assert status["audio"]["state"] == "error" and status["audio"]["card"] == "gone"
        assert "is gone during the call" in status["audio"]["error"]
        assert os.strerror(19) in status["audio"]["error"] and status["audio"]["xruns"] == 2
        box.advance(4.0)
        assert session.reopens == 2, "retried every 1.5 s while gone"

        session.back()
        box.advance(0.1)
        assert box.board.leds["error"] == "off"
        assert box.app.status()["audio"]["state"] == "ok"
        box.advance(4.0)
        assert session.reopens == 2, "no retry once it is back"

        box.board.press("hangup")
        box.pump()
        assert box.app.state == "idle" and session.card_fd not in box.clock.readers
        await box.app.stop()

    run(scenario())


class Unplugged(FakeAudio):
    """ALSA device names whose probe fails while ``gone`` (the App's probe between calls)."""

    gone = False

    def is_device(self, spec: str) -> bool:
        return True

    def probe(self, spec: str, capture: bool) -> str:
        if self.gone:
            raise AudioError(f"ALSA device {spec!r} cannot be opened: No such device")
        return spec


def test_a_card_still_gone_when_the_call_ends_refuses_new_calls() -> None:
    box = FakeBox()
    box.app.media_control.parts = media = CardMedia()
    box.app.media_control.audio = audio = Unplugged()

    async def scenario() -> None:
        session = await card_call(box, media)
        session.lose()
        audio.gone = True
        box.advance(0.1)
        box.board.press("hangup")
        box.pump()
        assert box.app.state == "idle" and box.board.leds["error"] == "fast"
        reply = await box.controls.command(cmd="call")
        assert reply["ok"] is False and "audio" in reply["error"]
        audio.gone = False  # plugged back between calls: the next press probes and calls
        box.board.press("call")
        box.pump()
        assert box.app.state == "calling"
        await box.app.stop()

    run(scenario())
