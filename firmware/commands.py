"""The commands of the control socket and of MQTT: a table from each command name to the
supervisor event it becomes (``EVENTS``), beside those answered without one (``QUERIES``: the
status, the visitor log and sending DTMF keys).

Owns the command names, how a request's fields become an event, and the replies' wording. A
new command is one table row. Must not know the socket or its framing (``firmware.control``)
nor what the supervisor does with an event: a state without a row answers with the
supervisor's own reason. Every table command (not a query) is told to the chronicle with who
sent it (``source``: control, mqtt) and whether it was taken: a building event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from . import supervisor as sv
from .config import Config
from .media_control import MediaControl
from .outbound.chronicle import Chronicle
from .parts import BoardLike

Reply = dict[str, Any]


class Commanded(Protocol):
    """What the commands reach of the running intercom."""

    cfg: Config
    sup: sv.Supervisor
    board: BoardLike | None
    chronicle: Chronicle

    @property
    def media_control(self) -> MediaControl: ...
    def status(self) -> dict[str, Any]: ...
    def dispatch(self, event: sv.Event) -> list[sv.Command]: ...


def _call(box: Commanded, req: dict[str, Any], source: str) -> sv.Event | Reply:
    return sv.UserCall(str(req.get("target") or box.cfg.calls.default_target))


def _press(box: Commanded, req: dict[str, Any], source: str) -> sv.Event | Reply:
    name = str(req.get("button") or "")
    if box.board is None or name not in box.board.buttons:
        known = ", ".join(sorted(box.board.buttons)) if box.board else ""
        return {"ok": False, "error": f"no button {name!r} (buttons: {known})"}
    return sv.Press(name)


# each builds the supervisor event a request asks for (or a refusal reply when it cannot)
EVENTS: dict[str, Callable[[Commanded, dict[str, Any], str], sv.Event | Reply]] = {
    "call": _call,
    "answer": lambda box, req, source: sv.UserAnswer(),
    "hangup": lambda box, req, source: sv.UserHangup(),
    "press": _press,
    "open_door": lambda box, req, source: sv.OpenDoor(source),  # the lockout rules apply
}


def _status(box: Commanded, req: dict[str, Any]) -> Reply:
    return {"ok": True, **box.status()}


def _dtmf(box: Commanded, req: dict[str, Any]) -> Reply:
    session = box.media_control.session
    if session is None:
        return {"ok": False, "error": "DTMF needs a call with media"}
    return {"ok": True, "queued": session.send_dtmf(str(req.get("digits") or ""))}


QUERIES: dict[str, Callable[[Commanded, dict[str, Any]], Reply]] = {
    "status": _status,
    "dtmf": _dtmf,
}


def _events(box: Commanded, req: dict[str, Any]) -> Reply:
    """The visitor log: the last ``count`` building events (all kept when absent)."""
    count = req.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        return {"ok": False, "error": "count must be a whole number"}
    return {"ok": True, "events": box.chronicle.recent(count)}


QUERIES["events"] = _events


def answer(box: Commanded, req: dict[str, Any], source: str = "control") -> Reply:
    """The reply to one request from ``source`` (control, mqtt): a query's answer, or the
    supervisor's verdict on the event the command becomes (refused, with its reason, when the
    state has no row)."""
    cmd = req["cmd"]
    if (query := QUERIES.get(cmd)) is not None:
        return query(box, req)
    if (build := EVENTS.get(cmd)) is None:
        return {"ok": False, "error": f"unknown command {cmd!r}"}
    reply = _verdict(box, build(box, req, source), source)
    target = str(req["target"]) if cmd == "call" and req.get("target") else None
    box.chronicle.command(source, cmd, target, reply)
    return reply


def _verdict(box: Commanded, event: sv.Event | Reply, source: str) -> Reply:
    if isinstance(event, dict):
        return event
    if isinstance(event, sv.UserHangup):
        box.chronicle.cause(source)
    for command in box.dispatch(event):
        if isinstance(command, sv.Refused):
            return {"ok": False, "error": command.reason}
    return {"ok": True, "state": box.sup.state}
