"""The running intercom: composes config, transport, user agent, supervisor, GPIO, media and
the control socket, and executes the supervisor's commands.

Its I/O comes from injected parts (``firmware.parts``: clock, network, media, audio, board,
control socket, systemd notifier), each defaulting to the real one, the way gpiozero takes a
``pin_factory``; a unit test runs a whole call on fakes with a virtual clock.

Owns the composition and the event dispatch: SIP events and button presses become
supervisor events; supervisor commands become SIP actions, LED and relay changes, timers and
tones. The only place where SIP meets media: negotiated MediaParams start, move and stop the
call's media (``firmware.media_control``) whose port the SDP announced. Opening the parts is
``firmware.startup``'s, running and swapping Apps ``firmware.runner``'s, the status report
``firmware.status``'s, the control commands ``firmware.commands``' table, the lockout file
``firmware.lockout_store.Keeper``'s, the building events ``firmware.outbound``'s (one line
per place: the chronicle tells what happened); App keeps the systemd watchdog, the updater's
alert and the registrar's addresses. Knows nothing about SIP wire details or RTP packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import commands, firewall, lockout_store, startup, status
from . import supervisor as sv
from .address import host_port
from .config import Config, RelaySpec
from .events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    DtmfReceived,
    IncomingCall,
    MediaUpdated,
    Registered,
    RegistrarMoved,
    RegistrationFailed,
    SourceRefused,
    Unregistered,
)
from .media_control import MediaControl
from .net import UaDriver
from .outbound import Kind, Outbox, links
from .outbound.chronicle import Chronicle
from .parts import (
    Audio,
    BoardLike,
    Boards,
    Clock,
    Controls,
    GpioBoards,
    Handle,
    Media,
    Network,
    RealAudio,
    RealNetwork,
    RtpMedia,
    SipTransport,
    UnixControls,
)
from .sip.errors import LocalProtocolError, RemoteProtocolError
from .sip.ua import CallState, RegState, UserAgent
from .sip.uri import is_ip_literal
from .systemd import Notifier
from .update.health import alert as update_alert
from .update.state import STATE as UPDATE_STATE
from .update.state import Store as UpdateStore

log = logging.getLogger("intercom")


def policy(cfg: Config) -> sv.Policy:
    c, g = cfg.calls, cfg.gpio
    return sv.Policy(
        buttons={b.name: sv.ButtonAction(b.action, b.target) for b in g.buttons},
        register=cfg.sip.register, ring_timeout=c.ring_timeout, max_duration=c.max_duration,
        auto_answer=c.auto_answer, auto_answer_delay=c.auto_answer_delay,
        door_code=c.door_code.upper(),
        relay_seconds=g.relay.seconds if g.relay else RelaySpec.seconds,
        ring_tone=c.ring_tone, ringback=c.ringback,
        door_code_max_failures=c.door_code_max_failures, door_code_window=c.door_code_window,
        door_code_lockout=c.door_code_lockout)


class App:
    """The intercom. ``pin_factory`` and every keyword part are optional: None builds the real
    one (see ``firmware.parts``)."""

    def __init__(self, cfg: Config, pin_factory: Any = None, *, clock: Clock | None = None,
                 network: Network | None = None, media: Media | None = None,
                 audio: Audio | None = None, boards: Boards | None = None,
                 controls: Controls | None = None, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.pin_factory = pin_factory
        self._clock = clock
        self.network: Network = network or RealNetwork()
        self.media_control = MediaControl(
            cfg, media or RtpMedia(), audio or RealAudio(), lambda: self.clock,
            report=lambda event: self.dispatch(event),  # looked up late: a swap replaces it
            digit=lambda key: self._digit(key, "rtp"),
            in_call=lambda: self.sup.state == "in_call", timed_out=self._media_timed_out)
        self.boards: Boards = boards or GpioBoards(pin_factory)
        self.controls: Controls = controls or UnixControls()
        self.notifier = notifier or Notifier()
        # the one place events leave the box: systemd's status line, MQTT, webhooks
        self.outbox = Outbox(cfg.log.events)
        self.outbox.subscribe(
            lambda event: event.kind is Kind.STATE and self.notifier.status(event.summary))
        self.links: links.Links | None = None
        self.ua: UserAgent | None = None
        self.driver: UaDriver | None = None
        self.transport: SipTransport | None = None
        self.control: Any = None
        self.sup = sv.Supervisor(policy(cfg))
        self.chronicle = Chronicle(self, self.outbox, self.registrar_shown,
                                   self._now, lambda s, f: self.clock.call_later(s, f))
        self.board: BoardLike | None = None
        self.remote: str | None = None
        self.call_started: float | None = None
        self.last_error: str | None = None
        self.last_call_end: str | None = None
        self.dtmf_keys = 0  # counted, never kept: the keys may be the door code
        self.door_openings = 0
        self._timers: dict[str, Handle] = {}
        self._tasks: list[asyncio.Task] = []
        self.local_ip = "127.0.0.1"
        self._unregistered = asyncio.Event()
        # the runtime directory (/run/intercom: kept over a service restart, not a reboot)
        self.runtime_dir = Path(cfg.control.socket).parent
        self.lockout = lockout_store.Keeper(self.runtime_dir, cfg.calls.door_code_lockout)
        self._error_from = ""  # what set last_error: "sip" (registration) or "audio"
        # firmware.provisioning's report when the configuration is provisioned (run_provisioned)
        self.provisioning_status: Callable[[], dict[str, Any]] | None = None
        # the SIP status of the registrar's last final answer to a REGISTER (None: none yet,
        # or the last one went unanswered): the health check tells a silent PBX from a refusal
        self.registrar_answer: int | None = None
        self.registrar_moved: tuple[str, float] | None = None  # (why, when: UNIX time)
        self.registrar_skipped: tuple[str, ...] = ()  # why a server or DNS target is not used
        self._skips_said: set[str] = set()
        self._update_seen: tuple[int, int, int] | None = None  # state.json's (ino, size, mtime)

    @property
    def state(self) -> str:
        return self.sup.state

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = asyncio.get_running_loop()
        return self._clock

    # --------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Open every part (``firmware.startup``: StartupError names the first that cannot
        open), start the supervisor, register."""
        self._clock = self._clock or asyncio.get_running_loop()  # before any other thread asks
        await startup.open_parts(self, on_sip=self._on_sip, on_press=self._press_from_thread,
                                 on_command=self.handle_command)
        assert self.ua is not None and self.driver is not None
        self._execute(self.sup.start(self._now(), self.lockout.load(self._now())))
        self._check_update()
        self.lockout.keep(self.sup.lockout_state())
        self.media_control.check_audio()
        self.ua.start(self.driver.now())
        self.driver.flush()
        self.notifier.ready(status.line(self))
        self.links = links.open_links(self.cfg, self.outbox, self.clock,
                                      lambda req: commands.answer(self, req, "mqtt"))
        self.chronicle.settled()  # the state the intercom starts in
        if self.notifier.watchdog_interval:
            self._tasks.append(asyncio.create_task(self._watchdog()))

    async def stop(self) -> None:
        self.notifier.stopping()
        for task in self._tasks:
            task.cancel()
        if self.ua is not None and self.driver is not None:
            self.ua.shutdown(self.driver.now())
            self.driver.flush()
            if self.cfg.sip.register and self.ua.reg_state is RegState.UNREGISTERING:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._unregistered.wait(), 3.0)
            self.driver.close()
        self.dtmf_keys += self.media_control.close()
        for handle in self._timers.values():
            handle.cancel()
        if self.control is not None:
            await self.control.close()
        if self.transport is not None:
            self.transport.close()
        if self.board is not None:
            self.board.close()
        self.boards.close()
        if self.links is not None:
            self.links.close()

    # --------------------------------------------------------------- events in
    def _press_from_thread(self, name: str) -> None:
        self.clock.call_soon_threadsafe(self.dispatch, sv.Press(name))

    def _now(self) -> float:
        return self.clock.time()

    async def refresh_registrar(self) -> None:
        """Ask DNS again (RFC 3263's answer may move): the targets of the failover and every
        address of the servers and the proxy, trusted; the previous ones kept on failure."""
        if self.ua is None:
            return
        try:
            found = await self.network.resolve_servers(self.cfg.sip)
        except OSError as exc:
            log.warning("cannot resolve the SIP servers again: %s (keeping %s)", exc,
                        ", ".join(sorted(self.ua.trust.registrar)))
            return
        if self.ua.failover is not None:
            self.ua.use_targets(found.targets, self._now(), self.cfg.sip.failback_interval)
        self.trust_servers(found.trusted)
        self.note_skipped(found.skipped)

    def note_skipped(self, reasons: list[str]) -> None:
        """Why a configured server or a target DNS named is not used (an IPv6-only name, a
        name without an address): shown by status; each reason logged once, not at every
        registration's new DNS answer."""
        self.registrar_skipped = tuple(reasons)
        for why in reasons:
            if why not in self._skips_said and len(self._skips_said) < 64:
                self._skips_said.add(why)
                log.warning("SIP server skipped: %s", why)

    def trust_servers(self, addresses: list[str]) -> None:
        """Trust these addresses (and every failover target) as the registrar's, in the user
        agent and in the host firewall's registrar file."""
        if self.ua is None:
            return
        before = set(self.ua.trust.registrar)
        self.ua.set_registrar_addresses(addresses)
        if set(self.ua.trust.registrar) != before:
            log.info("trusting the SIP servers at %s", ", ".join(sorted(self.ua.trust.registrar)))
        self._publish_registrar()

    def _publish_registrar(self) -> None:
        """The registrar's addresses for the host firewall (its .path unit re-applies it)."""
        if self.ua is None:
            return
        try:
            firewall.write_registrar(self.runtime_dir, sorted(self.ua.trust.registrar))
        except OSError as exc:
            log.warning("cannot write the registrar's addresses for the firewall: %s",
                        exc.strerror or exc)

    def dispatch(self, event: sv.Event) -> list[sv.Command]:
        """Feed the supervisor and run its commands; returns them (a Refused among them says
        why a user's request was not taken)."""
        log.debug("supervisor %s <- %s", self.sup.state, event)  # Digit's repr hides the key
        if isinstance(event, sv.Press | sv.UserCall) and self.media_control.audio_error:
            self.media_control.check_audio()  # a card plugged in since the last probe counts
        if isinstance(event, sv.AudioRecovered) and self._error_from == "audio":
            self.last_error, self._error_from = None, ""
        before = (self.sup.state, self.sup.lockout_until)
        cmds = self.sup.handle(event, self._now())
        self.chronicle.dispatched(event, cmds, *before)
        self._execute(cmds)
        self.lockout.keep(self.sup.lockout_state())  # what a restart must not forget
        self.chronicle.settled()
        return cmds

    def _on_sip(self, ev: object) -> None:
        log.debug("sip event %s", ev)
        self.chronicle.sip(ev)
        match ev:
            case Registered(expires=expires):
                self.registrar_answer = 200
                if not self.sup.registered:
                    log.info("registered with %s for %d s", self.registrar_shown(), expires)
                if self._error_from != "audio":
                    self.last_error, self._error_from = None, ""
                if self._names_to_resolve():  # a name may move; an address cannot
                    self._tasks = [t for t in self._tasks if not t.done()]
                    self._tasks.append(asyncio.create_task(self.refresh_registrar()))
                self.dispatch(sv.RegistrationUp())
            case RegistrationFailed(reason=reason, status=answer, retry_in=retry):
                self.registrar_answer = answer
                if self.last_error != reason:
                    log.error("%s (retrying in %.0f s)", reason, retry)
                self.last_error, self._error_from = reason, "sip"
                self.dispatch(sv.RegistrationDown(reason))
            case RegistrarMoved(target=target, name=name, reason=reason, preferred=preferred):
                self.registrar_moved = (reason, round(time.time(), 1))
                log.log(logging.INFO if preferred else logging.WARNING,
                        "registering with %s (%s): %s", target, name, reason)
            case Unregistered():
                self._unregistered.set()
            case IncomingCall(remote=remote, display=display):
                self.remote = f"{display} <{remote}>" if display else remote
                log.info("incoming call from %s", self.remote)
                self.dispatch(sv.Incoming(self.remote))
            case CallRinging():
                log.info("remote party is ringing")
                self.dispatch(sv.RemoteRinging())
            case CallAnswered(media=media):
                self.call_started = self.driver.now() if self.driver else None
                log.info("call with %s established", self.remote)
                if media is not None:
                    self.media_control.start(media)
                self.dispatch(sv.Connected())
            case MediaUpdated(media=media):
                self.media_control.update(media, self.sup.state == "in_call")
            case DtmfReceived(digit=digit):
                self._digit(digit, "info")
            case SourceRefused(host=host, port=port, what=what, count=count, policy=policy):
                log.warning("%s %d SIP message(s) (%s) from %s:%d: not the registrar nor in "
                            "sip.trusted_sources", "dropped" if policy == "drop" else "refused",
                            count, what, host, port)
            case CallEnded(reason=reason):
                log.info("call with %s ended: %s", self.remote, reason)
                self.last_call_end = reason
                self.dtmf_keys += self.media_control.stop()  # too late to be judged
                self.remote, self.call_started = None, None
                self.dispatch(sv.Ended(reason))

    def registrar_shown(self) -> str:
        """The server in use: address:port and the name it was found under."""
        if self.ua is None:
            return self.cfg.sip.server
        host, port = self.ua.server_addr
        name = self.ua.failover.targets.current.name if self.ua.failover else None
        shown = f"{host}:{port}"
        return shown + (f" ({name})" if name and name not in (host, shown) else "")

    def _names_to_resolve(self) -> bool:
        s = self.cfg.sip
        entries = [*(s.servers or (s.server,)), *([s.outbound_proxy] if s.outbound_proxy else [])]
        return any(not is_ip_literal((host_port(e) or (e, None))[0]) for e in entries)

    def _digit(self, digit: str, source: str) -> None:
        log.info("DTMF key received (%s)", source)  # never the key itself: it is the door code
        self.dtmf_keys += 1
        self.dispatch(sv.Digit(digit.upper(), source))

    # --------------------------------------------------------------- commands out
    def _execute(self, commands: list[sv.Command]) -> None:
        for cmd in commands:
            try:
                self._run(cmd)
            except (LocalProtocolError, RemoteProtocolError) as exc:
                log.warning("%s failed: %s", type(cmd).__name__, exc.reason)
                if isinstance(cmd, sv.Dial):
                    self.dispatch(sv.Ended(f"call failed: {exc.reason}"))

    def _run(self, cmd: sv.Command) -> None:
        ua, now = self.ua, self.driver.now() if self.driver else 0.0
        match cmd:
            case sv.Dial(target=target):
                assert ua is not None
                self.remote = target
                ua.make_call(target, self.media_control.local(), now)
            case sv.Answer():
                if ua is not None and ua.call_state is CallState.RINGING:
                    if self.media_control.available():
                        ua.answer(self.media_control.local(), now)
                    else:
                        ua.reject(480, now)
            case sv.Reject(status=status):
                if ua is not None and ua.call_state is CallState.RINGING:
                    ua.reject(status, now)
            case sv.Hangup():
                if ua is not None and ua.in_call:
                    ua.hangup(now)  # ends the call locally even when no BYE can be sent
            case sv.Led(name=name, mode=mode):
                if self.board is not None:
                    self.board.set_led(name, mode)
            case sv.PulseRelay(seconds=seconds):
                self.door_openings += 1
                if self.board is not None:
                    self.board.pulse_relay(seconds)
            case sv.StartTimer(name=name, seconds=seconds):
                if (old := self._timers.pop(name, None)) is not None:
                    old.cancel()
                self._timers[name] = self.clock.call_later(seconds, self._timer_fired, name)
            case sv.CancelTimer(name=name):
                if (old := self._timers.pop(name, None)) is not None:
                    old.cancel()
            case sv.Tone(kind=kind):
                self.media_control.tone(kind)
            case sv.Log(level=level, message=message):
                log.log(logging.getLevelName(level.upper()), "%s", message)
            case sv.Refused(reason=reason, fault=True):
                self.last_error, self._error_from = reason, "audio"
        if self.driver is not None:
            self.driver.flush()

    def _timer_fired(self, name: str) -> None:
        self._timers.pop(name, None)
        self.dispatch(sv.timer_event(name))

    # --------------------------------------------------------------- updates
    def _check_update(self) -> None:
        """The updater's state file (root's, read-only here) now and every 10 s: a rolled-back
        update nobody acknowledged blinks the error LED slowly. A stat() per look; the file is
        read only when it changed."""
        path = Path(self.cfg.update.state_dir) / UPDATE_STATE
        try:
            st = path.stat()
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            seen = None
        if seen != self._update_seen:
            self._update_seen = seen
            reason = update_alert(UpdateStore(path.parent).read()) if seen else None
            if reason != self.sup.update_alert:
                self.dispatch(sv.UpdateAlert(reason))
        self._timers["update_state"] = self.clock.call_later(10, self._check_update)

    def _media_timed_out(self, why: str) -> bool:
        """Hang up a call whose peer stopped sending; True when the call ended."""
        self.chronicle.cause("media_timeout")
        self.dispatch(sv.UserHangup())
        if self.sup.state == "in_call":
            return False
        self.last_call_end = why  # not just "local hangup"
        return True

    # --------------------------------------------------------------- health
    def healthy(self) -> bool:
        """The event loop runs (we are in it) and, during a call, the media loop ticks."""
        return self.media_control.ticking()

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval or 10.0
        while True:
            await asyncio.sleep(interval)
            if self.healthy():
                self.notifier.watchdog()
            else:
                log.error("media loop stalled: withholding the watchdog ping")

    # --------------------------------------------------------------- control socket
    async def handle_command(self, req: dict[str, Any]) -> dict[str, Any]:
        """A control-socket request (``firmware.commands``)."""
        return commands.answer(self, req, "control")

    def status(self) -> dict[str, Any]:
        return status.report(self)

    def retained(self) -> dict[str, Any]:
        return status.retained(self)
