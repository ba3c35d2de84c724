"""The control socket's commands: a table from each command name to the supervisor event it
becomes (``EVENTS``), beside the two that are answered without one (``QUERIES``: the status
and sending DTMF keys).

Owns the command names, how a request's fields become an event, and the replies' wording. A
new command is one table row. Must not know the socket or its framing (``firmware.control``)
nor what the supervisor does with an event: a state without a row answers with the
supervisor's own reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from . import supervisor as sv
from .config import Config
from .media_control import MediaControl
from .parts import BoardLike

Reply = dict[str, Any]


class Commanded(Protocol):
    """What the commands reach of the running intercom."""

    cfg: Config
    sup: sv.Supervisor
    board: BoardLike | None

    @property
    def media_control(self) -> MediaControl: ...
    def status(self) -> dict[str, Any]: ...
    def dispatch(self, event: sv.Event) -> list[sv.Command]: ...


def _call(box: Commanded, req: dict[str, Any]) -> sv.Event | Reply:
    return sv.UserCall(str(req.get("target") or box.cfg.calls.default_target))


def _press(box: Commanded, req: dict[str, Any]) -> sv.Event | Reply:
    name = str(req.get("button") or "")
    if box.board is None or name not in box.board.buttons:
        known = ", ".join(sorted(box.board.buttons)) if box.board else ""
        return {"ok": False, "error": f"no button {name!r} (buttons: {known})"}
    return sv.Press(name)


# each builds the supervisor event a request asks for (or a refusal reply when it cannot)
EVENTS: dict[str, Callable[[Commanded, dict[str, Any]], sv.Event | Reply]] = {
    "call": _call,
    "answer": lambda box, req: sv.UserAnswer(),
    "hangup": lambda box, req: sv.UserHangup(),
    "press": _press,
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


def answer(box: Commanded, req: dict[str, Any]) -> Reply:
    """The reply to one control-socket request: a query's answer, or the supervisor's verdict
    on the event the command becomes (refused, with its reason, when the state has no row)."""
    cmd = req["cmd"]
    if (query := QUERIES.get(cmd)) is not None:
        return query(box, req)
    if (build := EVENTS.get(cmd)) is None:
        return {"ok": False, "error": f"unknown command {cmd!r}"}
    event = build(box, req)
    if isinstance(event, dict):
        return event
    for command in box.dispatch(event):
        if isinstance(command, sv.Refused):
            return {"ok": False, "error": command.reason}
    return {"ok": True, "state": box.sup.state}
