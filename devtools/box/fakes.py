"""The box on fakes: the firmware's ``App`` whole, its I/O parts replaced and its clock
virtual, wired to a second sans-I/O user agent playing the PBX (with ``devtools.registrar``
answering REGISTER and checking digests). What the unit and fuzz tests run App on.

Real: ``App``, the supervisor, the SIP user agent inside App, and the PBX's user agent (every
datagram goes through both parsers). Fake: only what App does I/O with — the SIP transport,
name resolution, RTP ports and sessions, audio devices, the board's pins and the control
socket — plus a clock whose time moves only when the test says so. No event loop runs: the
scenarios are coroutines driven one step (nothing in them waits). The fake media session
keeps the real wake-up mechanism: an eventfd the test writes to as the media thread would,
watched by App through ``add_reader``. Imports nothing compiled.
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.address import host_port
from firmware.app import App
from firmware.config import GpioSettings, SipSettings, parse_config
from firmware.events import MediaParams
from firmware.media.audio import NullSink, SilenceSource
from firmware.resolver import Resolved
from firmware.sip.message import Request, parse_message
from firmware.sip.targets import Target
from firmware.sip.transaction import TimerConfig
from firmware.sip.ua import UAConfig, UserAgent
from firmware.systemd import Notifier

from ..registrar import Registrar
from .config import config_text

APP_ADDR = ("127.0.0.1", 5070)
PBX_ADDR = ("127.0.0.2", 5080)
# the box on fakes: no registration unless asked, no keep-alive, the door code 1234
SIP = {"server": PBX_ADDR[0], "port": PBX_ADDR[1], "password": "pw", "register": False,
       "keepalive": "off", "local_port": APP_ADDR[1]}
CALLS = {"door_code": "1234", "default_target": "5001", "ring_timeout": 20}
GPIO = {"pin_factory": "mock", "relay": {"pin": 26, "seconds": 2}}


def fake_config(folder: Path = Path("/nonexistent"), **sections: dict[str, Any]) -> str:
    """The YAML of the box on fakes (``box_config`` with the fakes' PBX and calls); each
    keyword section is merged over it, key by key."""
    merged = {"sip": dict(SIP), "calls": dict(CALLS), "gpio": dict(GPIO)}
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return config_text(folder, PBX_ADDR[1], **merged)


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
    """``unresolvable`` / ``unusable``: the errors resolving the name / opening the transport
    raise (the start-up failure paths); ``skipped``: the resolver's reasons for servers it
    left out."""

    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.unresolvable: OSError | None = None
        self.unusable: Exception | None = None
        self.skipped: list[str] = []

    async def resolve_servers(self, sip: SipSettings) -> Resolved:
        """Every entry of sip.server taken as the address it names (no DNS on fakes)."""
        if self.unresolvable is not None:
            raise self.unresolvable
        targets = []
        for entry in sip.servers or (sip.server,):
            host, port = host_port(entry) or (entry, None)
            targets.append(Target(host, port or sip.port, entry, "address"))
        return Resolved(targets, sorted({t.host for t in targets}), list(self.skipped))

    def source_address(self, host: str, port: int) -> str:
        return APP_ADDR[0]

    async def open(self, sip: SipSettings, server: tuple[str, int], bind: str) -> FakeTransport:
        if self.unusable is not None:
            raise self.unusable
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
        self.card_fd = -1  # no sound card the loop drives

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

    def card_state(self) -> str:
        return "none"

    def reopen_card(self) -> bool:
        return False


class FakeMedia:
    def __init__(self, missing_canceller: str | None = None) -> None:
        self.sessions: list[FakeSession] = []
        self.missing_canceller = missing_canceller  # why "this build" lacks the canceller
        self.port_taken: OSError | None = None  # what binding the RTP port raises

    def ports(self, address: str, port: int) -> FakePorts:
        if self.port_taken is not None:
            raise self.port_taken
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

    def probe(self, spec: str, capture: bool) -> str:
        return spec

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
    def __init__(self, handler: Any, refused: OSError | None = None) -> None:
        self.handler = handler
        self.refused = refused

    async def start(self) -> None:
        if self.refused is not None:
            raise self.refused

    async def close(self) -> None:
        pass


class FakeControls:
    """``running``: another intercom answers on the socket; ``refused``: what creating the
    socket raises."""

    def __init__(self) -> None:
        self.server_: FakeControl | None = None
        self.running = False
        self.refused: OSError | None = None

    async def answers(self, path: str) -> bool:
        return self.running

    def server(self, path: str, handler: Any) -> FakeControl:
        self.server_ = FakeControl(handler, self.refused)
        return self.server_

    async def command(self, **req: Any) -> dict[str, Any]:
        assert self.server_ is not None
        return await self.server_.handler(req)


# ----------------------------------------------------------------------------- harness
class FakeBox:
    """App on fakes, wired to a sans-I/O PBX user agent. ``config``: the YAML, default
    ``fake_config(**sections)``."""

    def __init__(self, config: str | None = None, **sections: dict[str, Any]) -> None:
        config = config if config is not None else fake_config(**sections)
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
