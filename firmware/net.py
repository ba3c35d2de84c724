"""asyncio adapters that carry the sans-I/O SIP user agent over UDP, TCP or TLS.

Owns sockets, stream connect/reconnect (and the move of the one connection to another
server when the registration fails over) and framing, the TLS context (TLS is
"TCP with an SSL context": certificate checked against ``sip.tls``, never a fallback to clear
text), the loop clock and the one timer handle that drives ``UserAgent.handle_timer``. One
adapter class per name of ``firmware/sip/transport.py``'s table (``ADAPTERS``); each opens
itself from the SIP settings and words its own set-up errors (``TransportUnusableError``). Thin on
purpose: every SIP decision lives in ``firmware.sip``. Knows nothing about GPIO, audio or the
control socket.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import re
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, ClassVar, cast

from .config import SipSettings, TlsSettings
from .sip.errors import RemoteProtocolError
from .sip.message import StreamParser
from .sip.registration import RETRY_SPREAD, spread
from .sip.sdes import redact as redact_keys
from .sip.transport import transport as sip_transport
from .sip.ua import UserAgent

log = logging.getLogger("intercom.net")
Addr = tuple[str, int]
_SECRET_HEADERS = re.compile(rb"(?im)^((?:proxy-)?authorization:).*$")
_DTMF_TYPE = re.compile(rb"(?im)^(?:content-type|c)[ \t]*:[^\r\n]*dtmf")
_SIGNAL_LINE = re.compile(rb"(?im)^([ \t]*signal[ \t]*=).*$")
_BODY_START = re.compile(rb"\r?\n\r?\n")
STREAM_MAX_MESSAGE = 65535  # bytes: a stream's framing limit (the UA applies sip.max_message_size)
PROBE_WAIT = 32.0  # s a failover probe's own connection waits for the answer (Timer F)


class TransportUnusableError(Exception):
    """The transport cannot be set up at all (port taken, certificate files unreadable): one
    line for the installer, worded by the adapter that knows what went wrong."""


def _without_keys(data: bytes) -> bytes:
    """The body of an INFO request or of any DTMF message replaced by its length: received
    keys may be the door code and never reach a log (Signal= lines anywhere, too)."""
    split = _BODY_START.search(data)
    if split is not None and split.end() < len(data):
        head, body = data[:split.end()], data[split.end():]
        if data[:5].upper() == b"INFO " or _DTMF_TYPE.search(head):
            data = head + b"<body redacted: %d bytes>" % len(body)
    return _SIGNAL_LINE.sub(rb"\1 <redacted>", data)


def redact(data: bytes) -> str:
    """A SIP message for the debug log, with credentials, SRTP keys and DTMF keys removed."""
    clean = _without_keys(_SECRET_HEADERS.sub(rb"\1 <redacted>", data))
    return redact_keys(clean).decode("utf-8", "replace")


def source_address_for(host: str, port: int) -> str:
    """The local IP the kernel would use to reach host:port (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, port))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


class UaDriver:
    """Feeds a UserAgent from a transport and the loop clock; hands its events to ``on_event``."""

    def __init__(self, ua: UserAgent, send: Callable[[bytes, Addr], None],
                 on_event: Callable[[object], None], clock: Any = None) -> None:
        self.ua = ua
        self._send = send
        self._on_event = on_event
        self._loop = clock or asyncio.get_running_loop()  # anything with time() and call_at()
        self._timer: Any = None
        self._last_bug_log = float("-inf")

    def now(self) -> float:
        return self._loop.time()

    def datagram(self, data: bytes, addr: Addr) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("recv from %s:%d\n%s", addr[0], addr[1], redact(data))
        try:
            self.ua.receive_datagram(data, addr, self.now())
        except Exception:  # noqa: BLE001 - a bug must cost one datagram, not the box
            self._bug("receiving a datagram")
        self.flush()

    def _bug(self, what: str) -> None:
        """The user agent raised although it never should (the fuzz tests hunt these):
        count it, log the traceback at most once a minute, and keep running."""
        self.ua.counters["internal_errors"] += 1
        if time.monotonic() - self._last_bug_log >= 60:
            self._last_bug_log = time.monotonic()
            log.exception("internal error while %s (dropped; counted in status)", what)

    def flush(self) -> None:
        """Send what the UA queued, deliver its events and re-arm its timer."""
        for data, addr in self.ua.datagrams_to_send():
            if log.isEnabledFor(logging.DEBUG):
                log.debug("send to %s:%d\n%s", addr[0], addr[1], redact(data))
            self._send(data, addr)
        while (event := self.ua.next_event()) is not None:
            self._on_event(event)
            # the handler may have acted on the UA (answer, hangup): send that too
            for data, addr in self.ua.datagrams_to_send():
                self._send(data, addr)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.ua.get_timer()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        try:
            self.ua.handle_timer(self.now())
        except Exception:  # noqa: BLE001
            self._bug("running SIP timers")
        self.flush()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


# Why one datagram could not be sent, as the user agent counts it (send_failed_<reason>).
_SEND_FAILURES = {
    errno.EMSGSIZE: "too_large",
    errno.EAGAIN: "buffer_full", errno.ENOBUFS: "buffer_full", errno.ENOMEM: "buffer_full",
    errno.EHOSTUNREACH: "unreachable", errno.ENETUNREACH: "unreachable",
    errno.EHOSTDOWN: "unreachable", errno.ENETDOWN: "unreachable",
    errno.ECONNREFUSED: "unreachable", errno.EADDRNOTAVAIL: "unreachable",
    errno.EPERM: "forbidden", errno.EACCES: "forbidden",
}
STREAM_BUFFER_MAX = 256 * 1024  # bytes queued on a stream before further messages are dropped


def send_failure(exc: BaseException) -> str:
    """The reason counted for a datagram ``sendto`` refused."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return _SEND_FAILURES.get(exc.errno, "other")
    return "bad_address" if isinstance(exc, TypeError | ValueError | OverflowError) else "other"


class UdpTransport(asyncio.DatagramProtocol):
    """The bound SIP socket. asyncio reads it; sending is done here on the socket itself, so
    that a datagram the kernel refuses (EMSGSIZE, a full buffer, no route, a firewall) costs
    that datagram alone — counted by the user agent — and nothing is queued in user space."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.driver: UaDriver | None = None
        self.server: Addr = ("127.0.0.1", 5060)
        self.send_errors = 0
        self._sock: socket.socket | None = None
        self._last_failure_log: dict[str, float] = {}

    @classmethod
    async def open(cls, bind: str, port: int) -> UdpTransport:
        loop = asyncio.get_running_loop()
        family, kind, proto_num, _, sockaddr = (await loop.getaddrinfo(
            bind, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE))[0]
        sock = socket.socket(family, kind, proto_num)
        try:
            sock.setblocking(False)
            sock.bind(sockaddr)
            transport, proto = await loop.create_datagram_endpoint(cls, sock=sock)
        except BaseException:
            sock.close()
            raise
        proto.transport = transport  # connection_made runs only on the next loop turn
        proto._sock = sock
        return proto

    @classmethod
    async def create(cls, sip: SipSettings, server: Addr, bind: str) -> UdpTransport:
        """The socket bound to ``bind``:``sip.local_port``, sending to ``server``."""
        try:
            udp = await cls.open(bind, sip.local_port)
        except OSError as exc:
            raise TransportUnusableError(f"cannot use SIP port {bind}:{sip.local_port}/udp "
                                    f"(sip.local_port): {exc.strerror or exc}") from None
        udp.server = server
        return udp

    @property
    def local_port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    async def connect(self) -> None:
        """Nothing to connect: a bound datagram socket sends to anyone."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if self.driver is not None:
            self.driver.datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        """asyncio's report of a socket error. Without IP_RECVERR an unconnected UDP socket
        learns nothing from ICMP, and we never send through asyncio, so this is at most a
        receive error: it says nothing about the PBX, and fails nothing."""
        self._failed("socket_error", exc, None)

    def send(self, data: bytes, addr: Addr) -> None:
        sock = self._sock
        if sock is None or self.transport is None or self.transport.is_closing():
            self.send_errors += 1
            return
        try:
            sock.sendto(data, addr)
        except (OSError, TypeError, ValueError, OverflowError) as exc:
            self.send_errors += 1
            self._failed(send_failure(exc), exc, addr)

    def _failed(self, reason: str, exc: BaseException, addr: Addr | None) -> None:
        """Count it in the user agent (status) and log each reason at most once a minute."""
        if self.driver is not None:
            if addr is not None:
                self.driver.ua.datagram_failed(addr, reason)
            else:
                self.driver.ua.counters[reason + "s"] += 1
        now = time.monotonic()
        if now - self._last_failure_log.get(reason, float("-inf")) >= 60:
            self._last_failure_log[reason] = now
            where = f" to {addr[0]}:{addr[1]}" if addr is not None else ""
            log.warning("SIP datagram%s not sent (%s: %s); counted in status, next such "
                        "message in a minute", where, reason, exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def tls_context(settings: TlsSettings) -> ssl.SSLContext:
    """The client context for SIP over TLS: TLS 1.2+, the PBX's certificate verified against
    ``ca_file`` (or the system store) and its name, an optional client certificate.

    Raises OSError/ssl.SSLError naming the file that could not be loaded."""
    ctx = ssl.create_default_context(cafile=settings.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not settings.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if settings.cert_file:
        ctx.load_cert_chain(settings.cert_file, settings.key_file)
    return ctx


def describe_connect_error(exc: BaseException, server: Addr, name: str) -> str:
    """One line for status and the log: what failed and what the installer can check."""
    where = f"{server[0]}:{server[1]}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate of {where} does not verify ({exc.verify_message}; "
                f"expected name {name!r}) — check sip.tls.ca_file / sip.tls.server_name")
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"cannot connect to {where}: timed out"
    return f"cannot connect to {where}: {getattr(exc, 'strerror', None) or exc}"


class TcpTransport(asyncio.Protocol):
    """One stream connection to the server, re-opened with backoff when it drops or cannot
    be made (``TlsTransport`` adds the SSL context)."""

    name: ClassVar[str] = "TCP"

    def __init__(self, server: Addr, max_size: int, server_name: str | None = None) -> None:
        self.server = server
        self.server_name = server_name or server[0]
        self.last_error: str | None = None
        self._connected_once = False
        self.driver: UaDriver | None = None
        self.transport: asyncio.Transport | None = None
        self._parser = StreamParser(max_size)
        self._max_size = max_size
        self._closing = False
        self._reconnect_task: asyncio.Task | None = None
        self._probe_task: asyncio.Task | None = None
        self._left = 0  # closed connections to a server we moved away from
        self._waiting: list[bytes] = []  # sent while connecting to a new server
        self._moving = False  # connecting to a server we moved to: what is sent waits
        self.send_errors = 0
        self.local: Addr | None = None
        self.rand: Callable[[], float] = random.random  # the reconnect spread's source
        self.reconnect_max = 60.0  # s: the longest wait between two attempts (sip.retry_max)

    @classmethod
    async def create(cls, sip: SipSettings, server: Addr, bind: str) -> TcpTransport:
        """Not connected yet (``connect``); the local side is the kernel's choice."""
        tcp = cls(server, STREAM_MAX_MESSAGE)
        tcp.reconnect_max = sip.retry_max
        return tcp

    @property
    def local_port(self) -> int:
        """0: a stream's local port is known only once connected (``local``)."""
        return 0

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        server = self.server
        try:
            await asyncio.wait_for(loop.create_connection(
                lambda: self, server[0], server[1], **self._connect_options(server)), 15)
        except (TimeoutError, OSError) as exc:
            self._failed(exc, server)
            raise OSError(self.last_error) from exc

    def _connect_options(self, addr: Addr) -> dict[str, Any]:
        return {}

    def _name_for(self, addr: Addr) -> str:
        """The name a certificate at ``addr`` must carry (quoted by connect errors)."""
        return self.server_name

    def _failed(self, exc: BaseException, server: Addr) -> None:
        text = describe_connect_error(exc, server, self.server_name)
        if text != self.last_error:  # the user agent turns it into the one error logged
            log.debug("SIP/%s: %s", self.name, text)
        self.last_error = text
        if self.driver is not None:
            self.driver.ua.transport_error(server, self.driver.now(), text)
            self.driver.flush()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._parser = StreamParser(self._max_size)
        host, port = transport.get_extra_info("sockname")[:2]
        self.local = (host, port)
        if self.last_error is not None:
            log.info("SIP/%s connection to %s:%d established", self.name, *self.server)
        self.last_error = None
        waiting, self._waiting, self._moving = self._waiting, [], False
        for data in waiting:  # what was sent while we moved to this server
            transport.write(data)
        if self.driver is not None:
            self.driver.ua.contact_addr = self.local
            self.driver.ua.local_addr = self.local
            if self._connected_once:  # a new connection: the registrar must learn it
                self.driver.ua.transport_restored(self.driver.now())
                asyncio.get_running_loop().call_soon(self.driver.flush)
        self._connected_once = True

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._parser.feed(data)
        except RemoteProtocolError as exc:
            log.warning("closing SIP/%s connection: %s", self.name, exc.reason)
            assert self.transport is not None
            self.transport.close()
            return
        for msg in messages:
            if self.driver is not None:
                self.driver.datagram(msg, self.server)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._left:  # the connection to the server the registration moved away from
            self._left -= 1
            return
        self.transport = None
        if self._closing:
            return
        log.warning("SIP/%s connection to %s:%d lost", self.name, *self.server)
        if self.driver is not None:
            self.driver.ua.connection_lost(self.driver.now(), f"{self.name} connection closed")
            self.driver.flush()
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Connect again at once, then after 0.5, 1, 2 ... s up to ``sip.retry_max``, each wait
        50-100 % of that at random: every box lost its connection at the same instant when the
        PBX went down, and they must not all come back at the same instant when it returns (RFC
        5626 §4.5)."""
        delay = 0.5
        while not self._closing and self.transport is None:
            try:
                await self.connect()
                if self.driver is not None:
                    self.driver.flush()
                return
            except OSError:
                await asyncio.sleep(spread(delay, RETRY_SPREAD, self.rand))
                delay = min(delay * 2, self.reconnect_max)

    def _retarget(self, addr: Addr) -> None:
        """The user agent moved to another server (failover or return): close the connection
        to the old one without reporting it lost, and connect to the new one; what is sent
        meanwhile waits (bounded) for the new connection."""
        log.info("SIP/%s: moving the connection from %s:%d to %s:%d", self.name,
                 *self.server, *addr)
        self.server = addr
        old, self.transport = self.transport, None
        if old is not None:
            self._left += 1
            old.close()
        self._waiting.clear()
        self._moving = True
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    def _send_probe(self, data: bytes, addr: Addr) -> None:
        if self._probe_task is not None:  # one at a time: the user agent gave up the last one
            self._probe_task.cancel()
        self._probe_task = asyncio.get_running_loop().create_task(self._probe(data, addr))

    async def _probe(self, data: bytes, addr: Addr) -> None:
        """A failover probe (an OPTIONS to a more preferred server) over a short-lived
        connection of its own, so the working connection stays where it is (a call from the
        server in use still reaches the box meanwhile); TLS checks that server's certificate
        against its own name. A connection that cannot be made fails the probe at once."""
        loop = asyncio.get_running_loop()
        side = _ProbeConnection(self, addr)
        try:
            transport, _ = await asyncio.wait_for(loop.create_connection(
                lambda: side, addr[0], addr[1], **self._connect_options(addr)), 15)
        except (TimeoutError, OSError) as exc:
            if self.driver is not None:
                text = describe_connect_error(exc, addr, self._name_for(addr))
                log.debug("SIP/%s probe: %s", self.name, text)
                self.driver.ua.transport_error(addr, self.driver.now(), text)
                self.driver.flush()
            return
        try:
            transport.write(data)
            await asyncio.wait_for(side.done.wait(), PROBE_WAIT)
        except TimeoutError:
            pass  # the probe's own transaction times out in the user agent
        finally:
            transport.close()
        if not side.answered and self.driver is not None:  # closed on us: fail it now
            self.driver.ua.transport_error(addr, self.driver.now(),
                                           f"{addr[0]}:{addr[1]} closed the probe's connection")
            self.driver.flush()

    def send(self, data: bytes, addr: Addr) -> None:
        if addr != self.server and self.driver is not None:
            if self.driver.ua.probing(addr):
                self._send_probe(data, addr)
                return
            self._retarget(addr)
        if self.transport is None and self._moving:
            if sum(map(len, self._waiting)) + len(data) <= STREAM_BUFFER_MAX:
                self._waiting.append(data)
            return
        if self.transport is None:
            self.send_errors += 1
            if self._reconnect_task is None or self._reconnect_task.done():
                self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())
            return
        if self.transport.get_write_buffer_size() + len(data) > STREAM_BUFFER_MAX:
            # the PBX stopped reading: drop this message (SIP timers handle the loss) rather
            # than let the queue grow without bound
            self.send_errors += 1
            if self.driver is not None:
                self.driver.ua.datagram_failed(addr, "buffer_full")
            return
        self.transport.write(data)

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()
        for task in (self._reconnect_task, self._probe_task):
            if task is not None:
                task.cancel()


class _ProbeConnection(asyncio.Protocol):
    """The short-lived connection a failover probe goes over (``TcpTransport._probe``): what
    comes back is handed to the user agent as from that server, then it is closed."""

    def __init__(self, owner: TcpTransport, addr: Addr) -> None:
        self.owner = owner
        self.addr = addr
        self.parser = StreamParser(STREAM_MAX_MESSAGE)
        self.done = asyncio.Event()
        self.answered = False

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.parser.feed(data)
        except RemoteProtocolError:
            messages = []
            self.done.set()
        for msg in messages:
            self.answered = True
            if self.owner.driver is not None:
                self.owner.driver.datagram(msg, self.addr)
            self.done.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set()


class TlsTransport(TcpTransport):
    """TCP with the SSL context of ``sip.tls``: the certificate is checked on every connect,
    against the name the server it connects to was found under (``sip.tls.server_name`` when
    set); a failed handshake is reported and retried over TLS only, never in clear text."""

    name: ClassVar[str] = "TLS"

    def __init__(self, server: Addr, max_size: int, context: ssl.SSLContext,
                 server_name: str | None = None, fixed_name: bool = False) -> None:
        super().__init__(server, max_size, server_name)
        self.ssl = context
        self.fixed_name = fixed_name  # sip.tls.server_name: every server must carry that name

    def _name_for(self, addr: Addr) -> str:
        # each server proves the name it was found under (its SRV target or its configured
        # host), so a failover verifies the secondary against its own name, not the primary's
        found = None
        if self.driver is not None and not self.fixed_name:
            found = self.driver.ua.server_name(addr)
        return found or self.server_name

    def _connect_options(self, addr: Addr) -> dict[str, Any]:
        name = self._name_for(addr)
        if addr == self.server:
            self.server_name = name  # what this connection's errors quote
        return {"ssl": self.ssl, "server_hostname": name, "ssl_handshake_timeout": 10}

    @classmethod
    async def create(cls, sip: SipSettings, server: Addr, bind: str) -> TlsTransport:
        try:
            context = tls_context(sip.tls)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError too
            raise TransportUnusableError(f"cannot set up SIP over TLS: {exc}") from None
        tls = cls(server, STREAM_MAX_MESSAGE, context, sip.tls.server_name or sip.server,
                  fixed_name=sip.tls.server_name is not None)
        tls.reconnect_max = sip.retry_max
        return tls


Adapter = UdpTransport | TcpTransport
# one adapter per name of the transport table (tests/unit/test_transport.py keeps them equal)
ADAPTERS: dict[str, type[UdpTransport] | type[TcpTransport]] = {
    "udp": UdpTransport, "tcp": TcpTransport, "tls": TlsTransport}


async def open_transport(sip: SipSettings, server: Addr, bind: str) -> Adapter:
    """The adapter for ``sip.transport``, set up; raises TransportUnusableError saying why not."""
    return await ADAPTERS[sip_transport(sip.transport).name].create(sip, server, bind)

