"""Start-up: opening the intercom's parts in order, each failure one line naming its cause.

Owns the order (the single-instance check, resolving the registrar, the SIP transport, the user
agent, the media ports, the echo canceller, the board, the control socket) and the wording of
what stops a start (``StartupError``) or deserves a warning (TLS unverified, SRTP keys in clear
SIP). Each part is set on the App as soon as it is open, so ``App.stop`` closes exactly what was
opened. Must not know what the App does with the parts once they run: the supervisor, the
events, the status are the App's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import Config
from .net import TransportUnusableError, UaDriver
from .sip.targets import Target
from .sip.transaction import TimerConfig
from .sip.transport import transport as sip_transport
from .sip.ua import UAConfig, UserAgent

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("intercom")


class StartupError(Exception):
    """The intercom cannot start; the message names the cause in one line."""


def ua_config(cfg: Config, server_ip: str, port: int | None = None,
              targets: Sequence[Target] = ()) -> UAConfig:
    """``targets``: what the resolution found (the first is ``server_ip``:``port``); with an
    outbound proxy or targets from SRV the REGISTER's Request-URI is the domain alone."""
    s = cfg.sip
    domain = s.domain or s.server
    by_dns = s.outbound_proxy is not None or any(t.via in ("SRV", "NAPTR") for t in targets)
    proxy = None
    if s.outbound_proxy:
        param = sip_transport(s.transport).uri_param
        proxy = f"sip:{s.outbound_proxy}" + (f";transport={param}" if param else "") + ";lr"
    return UAConfig(
        registrar_uri=f"sip:{domain}" if by_dns else None, outbound_proxy=proxy,
        server=server_ip, port=s.port if port is None else port, transport=s.transport,
        username=s.username,
        password=s.password, auth_username=s.auth_username, display_name=s.display_name,
        domain=s.domain or s.server, register=s.register, register_expires=s.register_expires,
        timers=TimerConfig(s.t1, s.t2, s.t4), keepalive=s.keepalive,
        keepalive_interval=s.keepalive_interval, retry_min=s.retry_min, retry_max=s.retry_max,
        ring_timeout=cfg.calls.ring_timeout + 5,  # the supervisor's timer normally acts first
        codecs=cfg.media.codecs, dtmf_payload_type=cfg.media.dtmf_payload_type,
        srtp=cfg.media.srtp, trusted_sources=s.trusted_sources,
        untrusted_policy=s.untrusted_policy, max_message_size=s.max_message_size)


async def open_parts(app: App, *, on_sip: Callable[[object], None],
                     on_press: Callable[[str], None],
                     on_command: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
    """Open the App's parts in order; StartupError at the first that cannot open. The SIP
    events, button presses and control requests of the opened parts go to the callbacks."""
    cfg, s = app.cfg, app.cfg.sip
    if await app.controls.answers(cfg.control.socket):
        raise StartupError(f"another intercom is already running (its control socket "
                           f"{cfg.control.socket} answers)")
    try:
        found = await app.network.resolve_servers(s)
    except OSError as exc:
        what, value = ("sip.outbound_proxy", s.outbound_proxy) if s.outbound_proxy else \
            ("sip.server", s.server if len(s.servers) <= 1 else ", ".join(s.servers))
        raise StartupError(f"cannot resolve {what} {value!r}: {exc}") from None
    targets = found.targets
    server = targets[0].addr
    app.local_ip = s.local_address or app.network.source_address(*server)
    kind = sip_transport(s.transport)
    if kind.secure and not s.tls.verify:
        log.warning("sip.tls.verify is false: the PBX's certificate is NOT checked, anyone "
                    "on the network path can impersonate the PBX and open the door")
    try:
        transport = await app.network.open(s, server, s.local_address or "0.0.0.0")
    except TransportUnusableError as exc:  # worded by the adapter
        raise StartupError(str(exc)) from None
    app.transport = transport
    app.ua = UserAgent(ua_config(cfg, server[0], server[1], targets),
                       (app.local_ip, transport.local_port))
    app.ua.use_targets(targets, app.clock.time(), s.failback_interval)
    app.trust_servers(found.trusted)
    app.note_skipped(found.skipped)
    app.driver = UaDriver(app.ua, transport.send, on_sip, app.clock)
    transport.driver = app.driver
    with contextlib.suppress(OSError):  # logged by the transport; retried with backoff
        await transport.connect()
    try:
        app.media_control.open(cfg.media.address or app.local_ip)
    except OSError as exc:
        raise StartupError(f"{exc} (media.rtp_port)") from None
    why = app.media_control.canceller_unavailable()
    if why is not None:
        raise StartupError(f"audio.echo_canceller: {cfg.audio.echo_canceller}: {why}")
    app.board = app.boards.open(cfg.gpio, on_press)
    app.control = app.controls.server(cfg.control.socket, on_command)
    try:
        await app.control.start()
    except OSError as exc:
        raise StartupError(f"cannot create the control socket {cfg.control.socket}: "
                           f"{exc.strerror or exc}") from None
    log.info("intercom %s starting: %s@%s:%d over %s, control socket %s", __version__,
             s.username, s.server, s.port, s.transport.upper(), cfg.control.socket)
    if cfg.media.srtp != "off" and not kind.secure:
        log.warning("media.srtp is %s but sip.transport is %s: the SRTP keys cross the "
                    "network in clear SIP, so whoever can read SIP can decrypt the audio",
                    cfg.media.srtp, s.transport)

