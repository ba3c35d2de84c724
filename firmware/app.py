"""The running intercom: composes config, transport, user agent, media and control socket.

Owns the box's call state as the user sees it (offline, idle, calling, ringing, in_call), the
status report, auto-answer, and the commands from the control socket. The only place where SIP
meets media: negotiated MediaParams start, move and stop the RTP session whose port the SDP
announces. Knows nothing about SIP wire details or RTP packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from . import __version__
from .config import Config
from .control import ControlServer
from .events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    DtmfReceived,
    IncomingCall,
    MediaUpdated,
    Registered,
    RegistrationFailed,
    Unregistered,
)
from .media.audio import AudioError, open_sink, open_source
from .media.stream import RtpPorts, RtpSession, StreamSettings
from .net import TcpTransport, UaDriver, UdpTransport, resolve, source_address_for
from .sip.errors import LocalProtocolError, RemoteProtocolError
from .sip.sdp import LocalMedia
from .sip.transaction import TimerConfig
from .sip.ua import UAConfig, UserAgent

log = logging.getLogger("intercom")


def ua_config(cfg: Config, server_ip: str) -> UAConfig:
    s = cfg.sip
    return UAConfig(
        server=server_ip, port=s.port, transport=s.transport, username=s.username,
        password=s.password, auth_username=s.auth_username, display_name=s.display_name,
        domain=s.domain or s.server, register=s.register, register_expires=s.register_expires,
        timers=TimerConfig(s.t1, s.t2, s.t4), keepalive=s.keepalive,
        keepalive_interval=s.keepalive_interval, retry_min=s.retry_min, retry_max=s.retry_max,
        ring_timeout=cfg.calls.ring_timeout, codecs=cfg.media.codecs,
        dtmf_payload_type=cfg.media.dtmf_payload_type,
        user_agent=f"intercom-firmware/{__version__}")


class App:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ua: UserAgent | None = None
        self.driver: UaDriver | None = None
        self.state = "offline"
        self.remote: str | None = None
        self.call_started: float | None = None
        self.last_error: str | None = None
        self.last_call_end: str | None = None
        self.media: dict[str, Any] | None = None
        self.dtmf: list[str] = []
        self._unregistered = asyncio.Event()
        self._answer_timer: asyncio.TimerHandle | None = None
        self._dtmf_timer: asyncio.TimerHandle | None = None
        self.ports: RtpPorts | None = None
        self.session: RtpSession | None = None
        self.last_media_stats: dict[str, Any] | None = None
        self.local_ip = "127.0.0.1"

    # --------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        s = self.cfg.sip
        try:
            server = await resolve(s.server, s.port)
        except OSError as exc:
            raise SystemExit(f"cannot resolve sip.server {s.server!r}: {exc}") from None
        self.local_ip = s.local_address or source_address_for(*server)
        if s.transport == "udp":
            transport: UdpTransport | TcpTransport = await UdpTransport.open(
                s.local_address or "0.0.0.0", s.local_port)
            transport.server = server
            local = (self.local_ip, transport.local_port)
        else:
            transport = TcpTransport(server, 65535)
            local = (self.local_ip, 0)
        self.transport = transport
        self.ua = UserAgent(ua_config(self.cfg, server[0]), local)
        self.driver = UaDriver(self.ua, transport.send, self._on_event)
        transport.driver = self.driver
        if isinstance(transport, TcpTransport):
            try:
                await transport.connect()
            except OSError as exc:
                log.warning("cannot connect to %s:%d over TCP yet: %s", *server, exc)
        self.media_ip = self.cfg.media.address or self.local_ip
        self.ports = RtpPorts(self.media_ip, self.cfg.media.rtp_port)
        self.control = ControlServer(self.cfg.control.socket, self.handle_command)
        await self.control.start()
        log.info("intercom %s starting: %s@%s:%d over %s, control socket %s", __version__,
                 s.username, s.server, s.port, s.transport.upper(), self.cfg.control.socket)
        self.state = "offline" if s.register else "idle"
        self.ua.start(self.driver.now())
        self.driver.flush()

    async def stop(self) -> None:
        if self.ua is not None and self.driver is not None:
            self.ua.shutdown(self.driver.now())
            self.driver.flush()
            if self.cfg.sip.register and self.ua.reg.state == "unregistering":
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._unregistered.wait(), 3.0)
            self.driver.close()
        self._stop_media()
        await self.control.close()
        self.transport.close()
        if self.ports is not None:
            self.ports.close()

    # --------------------------------------------------------------- events from SIP
    def _on_event(self, ev: object) -> None:
        log.debug("event %s", ev)
        match ev:
            case Registered(expires=expires):
                if self.state == "offline":
                    self.state = "idle"
                    log.info("registered with %s for %d s", self.cfg.sip.server, expires)
                self.last_error = None
            case RegistrationFailed(reason=reason, retry_in=retry):
                if self.last_error != reason:
                    log.error("%s (retrying in %.0f s)", reason, retry)
                self.last_error = reason
                if self.state == "idle":
                    self.state = "offline"
            case Unregistered():
                self._unregistered.set()
            case IncomingCall(remote=remote, display=display):
                self.state, self.remote = "ringing", _party(remote, display)
                log.info("incoming call from %s", self.remote)
                if self.cfg.calls.auto_answer:
                    loop = asyncio.get_running_loop()
                    self._answer_timer = loop.call_later(self.cfg.calls.auto_answer_delay,
                                                         self._auto_answer)
            case CallRinging():
                log.info("remote party is ringing")
            case CallAnswered(media=media):
                self.state, self.call_started = "in_call", self._now()
                self._set_media(media)
                log.info("call with %s established", self.remote)
                if media is not None:
                    self._start_media(media)
            case MediaUpdated(media=media):
                self._set_media(media)
                if self.session is not None:
                    self.session.update(media)
                elif self.state == "in_call":
                    self._start_media(media)
            case DtmfReceived(digit=digit):
                self.dtmf.append(digit)
            case CallEnded(reason=reason):
                log.info("call with %s ended: %s", self.remote, reason)
                self.last_call_end = reason
                self._call_over()

    def _set_media(self, media: object) -> None:
        self.media = None if media is None else {
            k: getattr(media, k) for k in ("remote_addr", "remote_port", "codec", "ptime",
                                          "direction", "dtmf_payload_type")}

    def _start_media(self, media: Any) -> None:
        assert self.ports is not None
        a, m = self.cfg.audio, self.cfg.media
        try:
            source, sink = open_source(a.capture), open_sink(a.playback)
        except AudioError as exc:
            log.error("audio unavailable: %s", exc)
            self.last_error = str(exc)
            return
        settings = StreamSettings(m.jitter_target_ms, m.jitter_min_ms, m.jitter_max_ms,
                                  m.realtime_priority, m.latch, spin_us=m.spin_us)
        self.session = RtpSession(self.ports, source, sink, settings,
                                  cname=f"{self.cfg.sip.username}@{self.media_ip}")
        self.session.start(media)
        self._poll_dtmf()

    def _poll_dtmf(self) -> None:
        if self.session is None:
            return
        for digit in self.session.received_digits():
            log.info("DTMF %s received", digit)
            self.dtmf.append(digit)
        self._dtmf_timer = asyncio.get_running_loop().call_later(0.1, self._poll_dtmf)

    def _stop_media(self) -> None:
        if self._dtmf_timer is not None:
            self._dtmf_timer.cancel()
            self._dtmf_timer = None
        if self.session is not None:
            for digit in self.session.received_digits():
                self.dtmf.append(digit)
            self.session.stop()
            self.last_media_stats = self.session.final_stats
            self.session.source.close()
            self.session.sink.close()
            self.session = None

    def _call_over(self) -> None:
        self._stop_media()
        if self._answer_timer is not None:
            self._answer_timer.cancel()
            self._answer_timer = None
        self.remote, self.call_started, self.media = None, None, None
        registered = self.ua is not None and (self.ua.registered or not self.cfg.sip.register)
        self.state = "idle" if registered else "offline"

    def _auto_answer(self) -> None:
        self._answer_timer = None
        if self.state == "ringing":
            self._act(lambda ua, now: ua.answer(self._local_media(), now))

    def _now(self) -> float:
        assert self.driver is not None
        return self.driver.now()

    def _local_media(self) -> LocalMedia:
        assert self.ports is not None
        m = self.cfg.media
        return LocalMedia(self.media_ip, self.ports.port, m.codecs, m.dtmf_payload_type, m.ptime)

    def _act(self, action: Any) -> None:
        assert self.ua is not None and self.driver is not None
        action(self.ua, self._now())
        self.driver.flush()

    # --------------------------------------------------------------- control socket
    async def handle_command(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req["cmd"]
        try:
            if cmd == "status":
                return {"ok": True, **self.status()}
            if cmd == "call":
                target = str(req.get("target") or self.cfg.calls.default_target)
                if self.state not in ("idle", "offline"):
                    return {"ok": False, "error": f"cannot call while {self.state}"}
                self._act(lambda ua, now: ua.make_call(target, self._local_media(), now))
                if self.state in ("idle", "offline"):
                    self.state, self.remote = "calling", target
                return {"ok": True, "state": self.state}
            if cmd == "answer":
                if self.state != "ringing":
                    return {"ok": False, "error": f"nothing to answer (state {self.state})"}
                self._act(lambda ua, now: ua.answer(self._local_media(), now))
                return {"ok": True, "state": self.state}
            if cmd == "dtmf":
                digits = str(req.get("digits") or "")
                if self.session is None:
                    return {"ok": False, "error": "DTMF needs a call with media"}
                return {"ok": True, "queued": self.session.send_dtmf(digits)}
            if cmd == "hangup":
                if self.state not in ("calling", "ringing", "in_call"):
                    return {"ok": False, "error": f"no call to hang up (state {self.state})"}
                self._act(lambda ua, now: ua.hangup(now))
                return {"ok": True, "state": self.state}
        except (LocalProtocolError, RemoteProtocolError) as exc:
            return {"ok": False, "error": exc.reason}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def status(self) -> dict[str, Any]:
        ua = self.ua
        duration = None
        if self.call_started is not None:
            duration = round(self._now() - self.call_started, 1)
        return {
            "version": __version__,
            "registered": bool(ua and ua.registered),
            "state": self.state,
            "remote": self.remote,
            "call_duration": duration,
            "last_error": self.last_error,
            "last_call_end": self.last_call_end,
            "server": f"{self.cfg.sip.server}:{self.cfg.sip.port}",
            "username": self.cfg.sip.username,
            "transport": self.cfg.sip.transport,
            "media": self.media,
            "rtp": self.session.stats() if self.session else self.last_media_stats,
            "dtmf": "".join(self.dtmf[-16:]),
            "counters": dict(ua.counters) if ua else {},
        }


def _party(uri: str, display: str | None) -> str:
    return f"{display} <{uri}>" if display else uri


async def run(cfg: Config, stop: asyncio.Event) -> None:
    app = App(cfg)
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
