"""The chronicle: turns what the running intercom sees into building events. A supervisor
event with the commands it produced, a SIP event, a control or MQTT command become button
presses, calls (started, ringing, answered, ended: direction, peer, duration, who ended it),
door openings (by DTMF and how the keys came, by the console or by MQTT), wrong codes, the
lockout, registration lost and restored, update alerts, and the retained state's changes.

Owns the call being told (direction, peer, when answered, why it ended), the door-open window
and the rule of what counts as which event. Reads the supervisor's memory, never changes it;
sends nothing itself (the ``Outbox`` fans out). Never touches a received key: a ``Digit``
counts only by its ``source``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .. import supervisor as sv
from ..events import BusyRefused, CallEnded
from . import Outbox
from .event import Kind

# what a local hang-up (a Hangup or Reject command) was caused by, per supervisor event kind
_CAUSES: dict[sv.EventKind, str] = {
    sv.EventKind.PRESS: "button",
    sv.EventKind.MAX_DURATION_REACHED: "max_duration", sv.EventKind.DIGIT: "wrong_codes",
    sv.EventKind.RING_TIMEOUT: "ring_timeout", sv.EventKind.AUDIO_FAILED: "audio",
}


class Watched(Protocol):
    """What the chronicle reads of the running intercom."""

    sup: sv.Supervisor

    def retained(self) -> dict[str, Any]: ...  # the retained state without the door


@dataclass
class _Call:
    direction: str
    peer: str
    answered_at: float | None = None
    ended_by: str | None = None  # a local cause, set by the command that ended it


class Chronicle:
    """One per App. ``monotonic``: the App's clock (durations, the door window); ``later``:
    run a function after some seconds (the door-open window's end)."""

    def __init__(self, box: Watched, outbox: Outbox, server: Callable[[], str],
                 monotonic: Callable[[], float],
                 later: Callable[[float, Callable[[], None]], object]) -> None:
        self._box = box
        self._outbox = outbox
        self._server = server
        self._monotonic = monotonic
        self._later = later
        self._call: _Call | None = None
        self._registered: bool | None = None  # None: not known yet
        self._ever_registered = False
        self._by_remote = False  # the SIP CallEnded in flight came from the far end
        self._door_open_until = 0.0
        self._cause: str | None = None  # why the next local hang-up happens (cause())

    # ------------------------------------------------------------------ inputs
    def sip(self, event: object) -> None:
        """A SIP event, before App dispatches it: who ended the call."""
        if isinstance(event, CallEnded):
            self._by_remote = event.by_remote
        elif isinstance(event, BusyRefused):  # turned away by the user agent, not the supervisor
            peer = f"{event.display} <{event.remote}>" if event.display else event.remote
            self._emit(Kind.CALL_REFUSED, direction="incoming", peer=peer, reason="busy")

    def cause(self, why: str) -> None:
        """The next local hang-up's cause (a command's source, a media timeout)."""
        self._cause = why

    def dispatched(self, event: sv.Event, cmds: list[sv.Command], before: str,
                   lockout_until: float | None) -> None:
        """A supervisor event and the commands it produced, before they run; ``before`` and
        ``lockout_until``: the supervisor's state and lockout end before the event."""
        sup = self._box.sup
        locked_before = lockout_until is not None and sup.now < lockout_until
        match event:
            case sv.Press(button=button):
                spec = sup.policy.buttons.get(button)
                self._emit(Kind.BUTTON_PRESSED, button=button,
                           action=spec.action.value if spec else None,
                           target=spec.target if spec else None)
            case sv.Incoming(remote=remote):
                if sup.state == sv.State.RINGING and before != sv.State.RINGING:
                    self._call = _Call("incoming", remote)
                    self._emit(Kind.CALL_STARTED, direction="incoming", peer=remote)
                else:
                    why = "busy" if before in (sv.State.CALLING, sv.State.RINGING,
                                               sv.State.IN_CALL) else "audio unavailable"
                    self._emit(Kind.CALL_REFUSED, direction="incoming", peer=remote, reason=why)
            case sv.RemoteRinging() if self._call is not None:
                self._emit(Kind.CALL_RINGING, **self._call_fields())
            case sv.Connected() if self._call is not None:
                self._call.answered_at = self._monotonic()
                self._emit(Kind.CALL_ANSWERED, **self._call_fields())
            case sv.Ended(reason=reason):
                self._ended(reason)
            case sv.RegistrationUp() if self._registered is not True:
                self._registered = True
                self._emit(Kind.REGISTRATION_RESTORED, server=self._server(),
                           first=not self._ever_registered)
                self._ever_registered = True
            case sv.RegistrationDown(reason=reason) if self._registered is not False:
                self._registered = False
                self._emit(Kind.REGISTRATION_LOST, server=self._server(), reason=reason)
            case sv.LockoutOver():
                self._emit(Kind.LOCKOUT_ENDED)
            case sv.UpdateAlert(reason=reason):
                if reason:
                    self._emit(Kind.UPDATE_ROLLED_BACK, reason=reason)
                else:  # App sends an UpdateAlert only when the alert changes
                    self._emit(Kind.UPDATE_ALERT_CLEARED)
        self._commands(event, cmds, locked_before)

    def command(self, by: str, name: str, target: str | None, reply: dict[str, Any]) -> None:
        """A control-socket or MQTT command and the answer it got (after its effects)."""
        self._emit(Kind.COMMAND, by=by, command=name, target=target,
                   accepted=bool(reply.get("ok")), reason=reply.get("error"))

    def recent(self, count: int | None = None) -> list[dict[str, Any]]:
        """The visitor log's last ``count`` events (all when None), oldest first."""
        return self._outbox.log.recent(count)

    def settled(self) -> None:
        """After the commands ran: the retained state, when it changed."""
        snapshot = dict(self._box.retained())
        snapshot["door_open"] = self._monotonic() < self._door_open_until
        self._outbox.emit(Kind.STATE, self._box.sup.state, summary=str(snapshot.pop(
            "summary", "")), snapshot=snapshot)

    # ------------------------------------------------------------------ rules
    def _commands(self, event: sv.Event, cmds: list[sv.Command], locked_before: bool) -> None:
        sup = self._box.sup
        judged = sv.CancelTimer(sv.Timer.CODE) in cmds and isinstance(event, sv.Digit)
        if judged and not any(isinstance(c, sv.PulseRelay) for c in cmds):
            peer = self._call.peer if self._call else None
            if locked_before:
                self._emit(Kind.CODE_DURING_LOCKOUT, peer=peer)
            else:
                failures = len(sup.failures) or sup.policy.door_code_max_failures
                self._emit(Kind.WRONG_CODE, peer=peer, failures=failures,
                           max_failures=sup.policy.door_code_max_failures)
        for cmd in cmds:
            match cmd:
                case sv.Dial(target=target):
                    self._call = _Call("outgoing", target)
                    self._emit(Kind.CALL_STARTED, direction="outgoing", peer=target)
                case sv.PulseRelay(seconds=seconds):
                    self._door_opened(event, seconds)
                case sv.StartTimer(name=sv.Timer.DOOR_LOCKOUT, seconds=seconds):
                    self._emit(Kind.LOCKOUT_STARTED, seconds=seconds,
                               until=round(time.time() + seconds, 1))
                case sv.Hangup() | sv.Reject() if self._call is not None:
                    self._call.ended_by = (self._call.ended_by or self._cause
                                           or _CAUSES.get(event.kind, "box"))
        self._cause = None
    def _door_opened(self, event: sv.Event, seconds: float) -> None:
        fields: dict[str, Any] = {"seconds": seconds}
        if isinstance(event, sv.Digit):
            fields.update(by="dtmf", via=event.source or None)
        elif isinstance(event, sv.OpenDoor):
            fields["by"] = event.source
        if self._call is not None:
            fields["peer"] = self._call.peer
        self._door_open_until = self._monotonic() + seconds
        self._emit(Kind.DOOR_OPENED, **fields)
        self._later(seconds, self.settled)  # the door's window closes: the state says so

    def _ended(self, reason: str) -> None:
        call, self._call = self._call, None
        by_remote, self._by_remote = self._by_remote, False
        if call is None:
            return
        duration = None
        if call.answered_at is not None:
            duration = round(self._monotonic() - call.answered_at, 1)
        ended_by = "remote" if by_remote else call.ended_by or "box"
        self._emit(Kind.CALL_ENDED, direction=call.direction, peer=call.peer, duration=duration,
                   ended_by=ended_by, reason=reason)

    def _call_fields(self) -> dict[str, Any]:
        assert self._call is not None
        return {"direction": self._call.direction, "peer": self._call.peer}

    def provisioning(self, result: str, config: str | None, reason: str | None) -> None:
        """A provisioned document applied, refused, or one the intercom could not start with
        (``firmware.runner`` reports it; the reason is the status's own one-line text)."""
        self._emit(Kind.PROVISIONING, result=result, config=config, reason=reason)

    def _emit(self, kind: Kind, **fields: Any) -> None:
        self._outbox.emit(kind, self._box.sup.state, **fields)
