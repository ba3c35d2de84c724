"""The I/O parts the application is built from: their interfaces and the real factories.

Like gpiozero's ``pin_factory``: ``App`` takes a clock, a network factory (name resolution and
the SIP transport), a media factory (RTP ports and sessions), an audio factory (ALSA, files,
tones), a board factory (buttons, LEDs, relay), a control-socket factory and a systemd
notifier; each defaults to the real one built here, and a test passes fakes instead. Owns only
these seams and their defaults: no call logic, no SIP decisions, no supervisor rules.

The compiled media core is loaded the way gpiozero loads a pin factory named by an entry
point: only when a real part that needs it is built or used (``RtpMedia``'s methods,
``RealAudio.tone``). Importing this module, ``firmware.app`` or the fakes therefore needs no
C build, and the pure layers test on a machine without a compiler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .config import GpioSettings, SipSettings
from .control import ControlServer
from .gpio import Board, GpioUnavailableError, make_pin_factory
from .media.audio import AudioError, Sink, Source, open_sink, open_source
from .media.settings import StreamSettings
from .net import UaDriver, open_transport, source_address_for
from .resolver import Resolved, resolve_servers

Addr = tuple[str, int]
log = logging.getLogger("intercom")


class Handle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the application needs from its event loop; asyncio's loop is one."""

    def time(self) -> float: ...
    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Handle: ...
    def call_later(self, delay: float, callback: Callable[..., object],
                   *args: Any) -> Handle: ...
    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Any: ...
    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None: ...
    def remove_reader(self, fd: int) -> bool: ...


class SipTransport(Protocol):
    """A SIP transport adapter (net.py): sends for, and feeds, the UA driver."""

    driver: UaDriver | None

    @property
    def local_port(self) -> int: ...  # 0 for a stream: known once connected
    async def connect(self) -> None: ...
    def send(self, data: bytes, addr: Addr) -> None: ...
    def close(self) -> None: ...


class Network(Protocol):
    async def resolve_servers(self, sip: SipSettings) -> Resolved: ...  # raises OSError
    def source_address(self, host: str, port: int) -> str: ...
    async def open(self, sip: SipSettings, server: Addr,
                   bind: str) -> SipTransport: ...  # raises net.TransportUnusableError


class MediaSession(Protocol):
    """One call's running audio (media/stream.py's RtpSession)."""

    source: Source
    sink: Sink
    final_stats: dict[str, Any] | None

    @property
    def running(self) -> bool: ...
    @property
    def digit_fd(self) -> int: ...  # readable when received_digits() has news (-1: never)
    @property
    def card_fd(self) -> int: ...  # readable when card_state() changed (-1: no card loop)
    def start(self, media: Any) -> None: ...
    def update(self, media: Any) -> None: ...
    def stop(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def canceller_stats(self) -> dict[str, Any]: ...  # {} without an echo canceller
    def received_digits(self) -> str: ...
    def send_dtmf(self, digits: str) -> int: ...
    def card_state(self) -> str: ...  # "ok" | "gone" | "none" (not a card loop)
    def reopen_card(self) -> bool: ...  # while gone: try the card again, off the loop


class Ports(Protocol):
    port: int

    def close(self) -> None: ...


class Media(Protocol):
    def ports(self, address: str, port: int) -> Ports: ...
    def session(self, ports: Any, source: Source, sink: Sink, settings: StreamSettings,
                cname: str) -> MediaSession: ...
    def canceller_unavailable(self, kind: str) -> str | None: ...  # why this build lacks it


class TonePlayback(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class Audio(Protocol):
    def is_device(self, spec: str) -> bool: ...
    def probe(self, spec: str, capture: bool) -> str: ...  # the name opened; AudioError
    def open(self, spec: str, capture: bool) -> Source | Sink: ...
    def tone(self, sink: Sink, kind: str) -> TonePlayback: ...


class BoardLike(Protocol):
    buttons: dict[str, Any]
    errors: list[str]

    def set_led(self, name: str, mode: str) -> None: ...
    def pulse_relay(self, seconds: float) -> None: ...
    def states(self) -> dict[str, str]: ...
    def report(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class Boards(Protocol):
    def open(self, settings: GpioSettings, on_press: Callable[[str], None]) -> BoardLike: ...
    def close(self) -> None: ...


class ControlLike(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...


ControlHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Controls(Protocol):
    async def answers(self, path: str) -> bool: ...
    def server(self, path: str, handler: ControlHandler) -> ControlLike: ...


# ----------------------------------------------------------------------------- the real ones
class RealNetwork:
    async def resolve_servers(self, sip: SipSettings) -> Resolved:
        return await resolve_servers(sip)

    def source_address(self, host: str, port: int) -> str:
        return source_address_for(host, port)

    async def open(self, sip: SipSettings, server: Addr, bind: str) -> SipTransport:
        return await open_transport(sip, server, bind)


class RtpMedia:
    """RTP sessions on the compiled media core (``media.stream``), imported on first use."""

    def ports(self, address: str, port: int) -> Ports:
        from .media.stream import RtpPorts

        return RtpPorts(address, port)

    def session(self, ports: Any, source: Source, sink: Sink, settings: StreamSettings,
                cname: str) -> MediaSession:
        from .media.stream import RtpSession

        return RtpSession(ports, source, sink, settings, cname=cname)

    def canceller_unavailable(self, kind: str) -> str | None:
        from .core._aec import unavailable  # what this build was compiled with

        return unavailable(kind)


_FILE_LIKE = ("wav:", "tone:")
_NOT_DEVICES = ("silence", "null")


def is_alsa(spec: str) -> bool:
    return not spec.startswith(_FILE_LIKE) and spec not in _NOT_DEVICES


class RealAudio:
    def is_device(self, spec: str) -> bool:
        return is_alsa(spec)

    def probe(self, spec: str, capture: bool) -> str:
        from .media.alsa import probe

        return probe(spec, capture)

    def open(self, spec: str, capture: bool) -> Source | Sink:
        if is_alsa(spec):
            from .media.alsa import AlsaSink, AlsaSource

            return AlsaSource(spec) if capture else AlsaSink(spec)
        return open_source(spec) if capture else open_sink(spec)

    def tone(self, sink: Sink, kind: str) -> TonePlayback:
        from .media.tones import TonePlayer  # on the core's PCM FIFO: loaded on first use

        return TonePlayer(sink, kind)


class GpioBoards:
    """Boards on gpiozero: ``pin_factory`` as given, else the one ``gpio.pin_factory`` names
    (made here and closed with the board). GPIO that cannot be used is an error in the log and
    status, never a crash loop."""

    def __init__(self, pin_factory: Any = None) -> None:
        self.pin_factory = pin_factory
        self._own: Any = None

    def open(self, settings: GpioSettings, on_press: Callable[[str], None]) -> Board:
        factory = self.pin_factory
        if factory is None:
            try:
                factory = self._own = make_pin_factory(settings.pin_factory)
            except GpioUnavailableError as exc:
                log.error("GPIO unavailable: %s", exc)
                board = Board(GpioSettings(), None, on_press)
                board.errors.append(str(exc))
                return board
        return Board(settings, factory, on_press)

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None


class UnixControls:
    async def answers(self, path: str) -> bool:
        """Whether a running intercom already listens on this control socket."""
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 1.0)
        except (TimeoutError, OSError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    def server(self, path: str, handler: ControlHandler) -> ControlServer:
        return ControlServer(path, handler)


__all__ = ["AudioError", "Clock", "GpioBoards", "RealAudio", "RealNetwork", "RtpMedia",
           "UnixControls", "is_alsa"]
