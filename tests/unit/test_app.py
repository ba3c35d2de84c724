"""The application driven whole, on fake I/O parts and a virtual clock.

Real: ``App``, the supervisor, the SIP user agent inside App, and a second sans-I/O user agent
playing the PBX (every datagram goes through both parsers). Fake: only what App does I/O
with — the SIP transport, name resolution, RTP ports and sessions, audio devices, the board's
pins and the control socket — plus a clock whose time moves only when the test says so. No
event loop runs: the scenarios are coroutines driven one step (nothing in them waits). The
fake media session keeps the real wake-up mechanism: an eventfd the test writes to as the
media thread would, watched by App through ``add_reader``.
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
from collections.abc import Callable
from typing import Any

import pytest

from firmware.app import App, StartupError
from firmware.config import GpioSettings, SipSettings, parse_config
from firmware.events import CallAnswered, CallEnded, IncomingCall, MediaParams
from firmware.media.audio import NullSink, SilenceSource
from firmware.sip.message import Request, parse_message
from firmware.sip.sdp import LocalMedia
from firmware.sip.transaction import TimerConfig
from firmware.sip.ua import UAConfig, UserAgent
from firmware.systemd import Notifier

from .registrar import Registrar

APP_ADDR = ("127.0.0.1", 5070)
PBX_ADDR = ("127.0.0.2", 5080)
CONFIG = """
sip: {server: 127.0.0.2, port: 5080, username: "5002", password: pw, register: false,
      keepalive: "off", local_port: 5070}
calls: {door_code: "1234", default_target: "5001", ring_timeout: 20}
gpio: {pin_factory: mock, relay: {pin: 26, seconds: 2}}
control: {socket: /nonexistent/intercom.sock}
"""


# ----------------------------------------------------------------------------- fakes
class FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Virtual time: callbacks run only in ``run``; fd readers fire when select says so."""

    def __init__(self) -> None:
        self.now = 100.0
        self._queue: list[tuple[float, int, FakeHandle, Callable[..., object], tuple]] = []
        self._seq = itertools.count()
        self.readers: dict[int, tuple[Callable[..., object], tuple]] = {}

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> FakeHandle:
        handle = FakeHandle()
        heapq.heappush(self._queue, (when, next(self._seq), handle, callback, args))
        return handle

    def call_later(self, delay: float, callback: Callable[..., object],
                   *args: Any) -> FakeHandle:
        return self.call_at(self.now + delay, callback, *args)

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> FakeHandle:
        return self.call_at(self.now, callback, *args)

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        self.readers[fd] = (callback, args)

    def remove_reader(self, fd: int) -> bool:
        return self.readers.pop(fd, None) is not None

    def run(self, until: float | None = None) -> None:
        """Run what is due (and readable) up to ``until`` (default: now), moving the clock."""
        until = self.now if until is None else until
        while True:
            ready = select.select(list(self.readers), [], [], 0)[0] if self.readers else []
            for fd in ready:
                if fd in self.readers:
                    callback, args = self.readers[fd]
                    callback(*args)
            if ready:
                continue
            if not self._queue or self._queue[0][0] > until:
                self.now = max(self.now, until)
                return
            when, _, handle, callback, args = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            if not handle.cancelled:
                callback(*args)


class FakeTransport:
    def __init__(self) -> None:
        self.driver: Any = None
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.closed = False

    @property
    def local_port(self) -> int:
        return APP_ADDR[1]

    async def connect(self) -> None:
        pass

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        self.closed = True


class FakeNetwork:
    def __init__(self) -> None:
        self.transport = FakeTransport()

    async def resolve(self, host: str, port: int) -> tuple[str, int]:
        return host, port

    async def resolve_all(self, host: str, port: int) -> list[str]:
        return [host]

    def source_address(self, host: str, port: int) -> str:
        return APP_ADDR[0]

    async def open(self, sip: SipSettings, server: tuple[str, int], bind: str) -> FakeTransport:
        return self.transport


class FakePorts:
    port = 40000

    def close(self) -> None:
        pass


class FakeSession:
    """Stands in for the RTP session: records what App asks; digits arrive as the media
    thread delivers them (queued, then one write to the eventfd)."""

    def __init__(self, source: Any, sink: Any) -> None:
        self.source, self.sink = source, sink
        self.final_stats: dict[str, Any] | None = None
        self.media: list[MediaParams] = []
        self.sent_dtmf = ""
        self._pending = ""
        self.running = False
        self.digit_fd = os.eventfd(0, os.EFD_NONBLOCK)

    def start(self, media: MediaParams) -> None:
        self.media.append(media)
        self.running = True

    def update(self, media: MediaParams) -> None:
        self.media.append(media)

    def stop(self) -> None:
        self.running = False
        self.final_stats = {"ticks": 1}
        os.close(self.digit_fd)

    def canceller_stats(self) -> dict[str, Any]:
        return {}

    def stats(self) -> dict[str, Any]:
        return {"ticks": 1}

    def deliver(self, digits: str) -> None:
        self._pending += digits
        os.eventfd_write(self.digit_fd, 1)

    def received_digits(self) -> str:
        try:
            os.eventfd_read(self.digit_fd)
        except BlockingIOError:
            pass
        out, self._pending = self._pending, ""
        return out

    def send_dtmf(self, digits: str) -> int:
        self.sent_dtmf += digits
        return len(digits)


class FakeMedia:
    def __init__(self, missing_canceller: str | None = None) -> None:
        self.sessions: list[FakeSession] = []
        self.missing_canceller = missing_canceller  # why "this build" lacks the canceller

    def ports(self, address: str, port: int) -> FakePorts:
        return FakePorts()

    def session(self, ports: Any, source: Any, sink: Any, settings: Any,
                cname: str) -> FakeSession:
        self.sessions.append(FakeSession(source, sink))
        return self.sessions[-1]

    def canceller_unavailable(self, kind: str) -> str | None:
        return self.missing_canceller


class FakeTone:
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class FakeAudio:
    """The product's own file-free audio (silence in, nothing out): no device, no thread."""

    def is_device(self, spec: str) -> bool:
        return False

    def probe(self, spec: str, capture: bool) -> None:
        pass

    def open(self, spec: str, capture: bool) -> Any:
        return SilenceSource() if capture else NullSink()

    def tone(self, sink: Any, kind: str) -> FakeTone:
        return FakeTone()


class FakeBoard:
    def __init__(self, settings: GpioSettings, on_press: Callable[[str], None]) -> None:
        self.buttons = {b.name: b for b in settings.buttons}
        self.errors: list[str] = []
        self.leds: dict[str, str] = {}
        self.pulses: list[float] = []
        self._on_press = on_press

    def press(self, name: str) -> None:
        self._on_press(name)  # as gpiozero's thread would

    def set_led(self, name: str, mode: str) -> None:
        self.leds[name] = mode

    def pulse_relay(self, seconds: float) -> None:
        self.pulses.append(seconds)

    def states(self) -> dict[str, str]:
        return dict(self.leds)

    def report(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class FakeBoards:
    def __init__(self) -> None:
        self.board: FakeBoard | None = None

    def open(self, settings: GpioSettings, on_press: Callable[[str], None]) -> FakeBoard:
        self.board = FakeBoard(settings, on_press)
        return self.board

    def close(self) -> None:
        pass


class FakeControl:
    def __init__(self, handler: Any) -> None:
        self.handler = handler

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


class FakeControls:
    def __init__(self) -> None:
        self.server_: FakeControl | None = None

    async def answers(self, path: str) -> bool:
        return False

    def server(self, path: str, handler: Any) -> FakeControl:
        self.server_ = FakeControl(handler)
        return self.server_

    async def command(self, **req: Any) -> dict[str, Any]:
        assert self.server_ is not None
        return await self.server_.handler(req)


# ----------------------------------------------------------------------------- harness
class Box:
    """App on fakes, wired to a sans-I/O PBX user agent."""

    def __init__(self, config: str = CONFIG) -> None:
        self.clock = FakeClock()
        self.net, self.media = FakeNetwork(), FakeMedia()
        self.boards, self.controls = FakeBoards(), FakeControls()
        self.app = App(parse_config(config), clock=self.clock, network=self.net,
                       media=self.media, audio=FakeAudio(), boards=self.boards,
                       controls=self.controls, notifier=Notifier({}))
        self.pbx = UserAgent(UAConfig(server=APP_ADDR[0], port=APP_ADDR[1], username="5001",
                                      register=False, keepalive="off",
                                      timers=TimerConfig(0.5, 4.0, 5.0)), PBX_ADDR)
        self.pbx_events: list[object] = []
        self.registrar = Registrar(self.pbx, password="pw")  # answers REGISTER, checks digests
        self.wire: list[bytes] = []  # what the box sent, in order
        self.from_pbx: list[str] = []  # first lines of what the PBX sent

    @property
    def board(self) -> FakeBoard:
        assert self.boards.board is not None
        return self.boards.board

    def pump(self) -> None:
        """Move datagrams both ways and run what is due, until nothing moves."""
        for _ in range(1000):
            self.clock.run()
            moved = False
            while self.net.transport.sent:
                data, addr = self.net.transport.sent.pop(0)
                assert addr == PBX_ADDR
                self.wire.append(data)
                moved = True
                if data.startswith(b"REGISTER "):
                    req = parse_message(data)
                    assert isinstance(req, Request)
                    self.registrar.received.append(req)
                    reply = self.registrar.answer(req)
                    if reply is not None:
                        self.net.transport.driver.datagram(reply.encode(), PBX_ADDR)
                    continue
                self.pbx.receive_datagram(data, APP_ADDR, self.clock.now)
            while (ev := self.pbx.next_event()) is not None:
                self.pbx_events.append(ev)
            for data, addr in self.pbx.datagrams_to_send():
                assert addr == APP_ADDR
                self.from_pbx.append(data.split(b"\r\n")[0].decode())
                self.net.transport.driver.datagram(data, PBX_ADDR)
                moved = True
            if not moved:
                return
        raise AssertionError("box and PBX did not settle")

    def advance(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while True:
            deadline = self.pbx.get_timer()
            step = min(end, deadline) if deadline is not None else end
            self.clock.run(until=step)
            if deadline is not None and deadline <= step:
                self.pbx.handle_timer(self.clock.now)
            self.pump()
            if self.clock.now >= end:
                return

    def sent_lines(self) -> list[str]:
        return [d.split(b"\r\n")[0].decode() for d in self.wire]


def run(coro: Any) -> Any:
    """Drive a scenario without an event loop: every part is a fake that never waits, so the
    coroutine must finish in one step (no selector, no self-pipe, no executor thread)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the scenario waited for something: a real part was used")


# ----------------------------------------------------------------------------- tests
def test_button_call_door_code_and_hangup() -> None:
    box = Box()

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
    box = Box()

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
    box = Box()

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
    box = Box(CONFIG.replace("register: false", "register: true"))

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
    box = Box()
    box.media.missing_canceller = "built without it"

    async def scenario() -> None:
        with pytest.raises(StartupError) as refused:
            await box.app.start()
        assert str(refused.value) == "audio.echo_canceller: speex: built without it"
        assert box.boards.board is None, "nothing after the media check was opened"

    run(scenario())
