"""The intercom's status report: the one dictionary the control socket's ``status`` command,
``intercom status`` and the console page show, and the one-line summary systemd shows.

Owns the assembly and the wording of those reports from what the running intercom exposes
(``Reported``). Reads, never changes: it must not know how a call, the media or the
registration is driven, nor who asks (control socket, systemd).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Protocol

from . import __version__
from . import supervisor as sv
from .config import Config
from .media_control import MediaControl
from .net import UaDriver
from .outbound import Outbox
from .outbound.links import Links
from .parts import BoardLike, Clock
from .sip.ua import UserAgent
from .update.slots import UNKNOWN as UNKNOWN_VERSION
from .update.slots import installed_version
from .update.slots import report as update_report


class Reported(Protocol):
    """What the report reads from the running intercom."""

    cfg: Config
    sup: sv.Supervisor
    ua: UserAgent | None
    board: BoardLike | None
    remote: str | None
    last_error: str | None
    last_call_end: str | None
    registrar_answer: int | None
    registrar_moved: tuple[str, float] | None
    registrar_skipped: tuple[str, ...]
    door_openings: int
    provisioning_status: Callable[[], dict[str, Any]] | None
    links: Links | None
    outbox: Outbox

    @property
    def media_control(self) -> MediaControl: ...
    @property
    def dtmf_keys(self) -> int: ...
    @property
    def call_started(self) -> float | None: ...
    @property
    def driver(self) -> UaDriver | None: ...
    @property
    def clock(self) -> Clock: ...


def line(box: Reported) -> str:
    """The one-line summary (systemd's STATUS=): state, registration and the remote party."""
    reg = "registered" if box.ua and box.ua.registered else "not registered"
    return f"{box.sup.state}, {reg}" + (f", {box.remote}" if box.remote else "")


def realtime(box: Reported) -> dict[str, Any]:
    """Whether the media loop got SCHED_FIFO (known once a call's loop has run)."""
    wanted = box.cfg.media.realtime_priority
    mc = box.media_control
    stats = mc.session.stats() if mc.session else mc.last_stats
    active = None if stats is None or wanted == 0 else bool(stats.get("realtime"))
    return {"priority": wanted, "active": active}


def lockout_wallclock(box: Reported) -> float | None:
    """When the door-code lockout ends, as a UNIX time (None when the code works)."""
    until, now = box.sup.lockout_until, box.clock.time()
    if until is None or until <= now:
        return None
    return round(time.time() + (until - now), 1)


def retained(box: Reported) -> dict[str, Any]:
    """The state MQTT keeps retained (and a webhook's state events carry): only what changes
    with a state, LED, registration, lockout or audio change, never a counter or a clock."""
    ua, mc = box.ua, box.media_control
    release = _release()
    return {
        "summary": line(box),
        "state": box.sup.state,
        "registered": bool(ua and ua.registered),
        "server": f"{box.cfg.sip.server}:{box.cfg.sip.port}",
        "in_call": box.sup.state == "in_call",
        "remote": box.remote,
        "leds": box.board.states() if box.board else {},
        "door_locked": box.sup.locked,
        "audio": "error" if mc.audio_error else "ok",
        "update_alert": box.sup.update_alert,
        "version": __version__ if release == UNKNOWN_VERSION else release,
    }


@functools.cache
def _release() -> str:
    """The booted root's /etc/intercom-version (read-only while running: read once); a
    checkout has none."""
    return installed_version()


def registrar(box: Reported) -> dict[str, Any] | None:
    """Which server the box registers with, how it was found, why it last moved, and why
    a configured server or a target DNS named is not used (``skipped``)."""
    ua = box.ua
    if ua is None:
        return None
    host, port = ua.server_addr
    out: dict[str, Any] = {"address": f"{host}:{port}", "name": None, "via": None,
                           "preferred": True, "targets": [f"{host}:{port}"], "moved": None,
                           "moved_at": None, "moves": 0,
                           "skipped": list(box.registrar_skipped)}
    if ua.failover is not None:
        ts = ua.failover.targets
        out.update(name=ts.current.name, via=ts.current.via, preferred=ts.preferred,
                   targets=[str(t) for t in ts.targets], moves=ts.moves)
    if box.registrar_moved is not None:
        out["moved"], out["moved_at"] = box.registrar_moved
    return out


def report(box: Reported) -> dict[str, Any]:
    """The whole status: registration, call, media, audio, GPIO, door, counters, updates."""
    ua, mc, a = box.ua, box.media_control, box.cfg.audio
    session = mc.session
    duration = None
    if box.call_started is not None and box.driver is not None:
        duration = round(box.driver.now() - box.call_started, 1)
    release = _release()
    rtp = session.stats() if session else mc.last_stats
    return {
        "version": __version__ if release == UNKNOWN_VERSION else release,
        "registered": bool(ua and ua.registered),
        "state": box.sup.state,
        "remote": box.remote,
        "call_duration": duration,
        "last_error": box.last_error,
        "registrar_answer": box.registrar_answer,
        "last_call_end": box.last_call_end,
        "server": f"{box.cfg.sip.server}:{box.cfg.sip.port}",
        "registrar": registrar(box),
        "username": box.cfg.sip.username,
        "transport": box.cfg.sip.transport,
        "media": mc.params,
        "rtp": rtp,
        "realtime": realtime(box),
        "audio": {"capture": a.capture, "playback": a.playback,
                  # the ALSA device each side opened last (``usb``: the card it resolved to)
                  "capture_device": mc.devices["capture"],
                  "playback_device": mc.devices["playback"],
                  "state": "error" if mc.audio_error else "ok",
                  "error": mc.audio_error, "echo_canceller": a.echo_canceller,
                  "aec": session.canceller_stats() if session else {},
                  # the card the media loop drives (the call's, or the last call's): "ok" |
                  # "gone", or None when no call ran on one; its xruns, both sides
                  "card": (rtp or {}).get("card"),
                  "xruns": (rtp or {}).get("audio_xruns", 0)},
        "leds": box.board.states() if box.board else {},
        "gpio": box.board.report() if box.board else {},
        "door_openings": box.door_openings,
        "door_lockout_until": lockout_wallclock(box),
        "dtmf_keys_received": box.dtmf_keys,
        "counters": dict(ua.counters) if ua else {},
        "provisioning": box.provisioning_status() if box.provisioning_status else None,
        "update": update_report(box.cfg.update.state_dir),
        "events": {"kept": len(box.outbox.log),
                   **(box.links.report() if box.links else {})},
    }
