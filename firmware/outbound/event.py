"""The building event: what happened at the door, as one frozen record with a kind, a wall-clock
time, a sequence number and typed fields.

Owns the kinds, the fields each kind carries and the JSON shape every consumer (systemd's status
line, MQTT, webhooks, the visitor log) sends on. A field never holds a secret nor a received
DTMF key: there is no field that could. Must not know who builds an event nor where it goes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    STATE = "state"  # the retained state changed (snapshot)
    BUTTON_PRESSED = "button_pressed"  # button, action, target
    CALL_STARTED = "call_started"  # direction, peer
    CALL_RINGING = "call_ringing"  # direction, peer
    CALL_ANSWERED = "call_answered"  # direction, peer
    CALL_ENDED = "call_ended"  # direction, peer, duration, ended_by, reason
    CALL_REFUSED = "call_refused"  # direction, peer, reason (busy, no audio)
    DOOR_OPENED = "door_opened"  # by (dtmf|control|mqtt), via (rtp|info), peer
    WRONG_CODE = "wrong_code"  # failures, max_failures, peer
    CODE_DURING_LOCKOUT = "code_during_lockout"  # peer
    LOCKOUT_STARTED = "lockout_started"  # seconds, until
    LOCKOUT_ENDED = "lockout_ended"
    REGISTRATION_LOST = "registration_lost"  # server, reason
    REGISTRATION_RESTORED = "registration_restored"  # server, first
    COMMAND = "command"  # by, command, target, accepted, reason
    UPDATE_ROLLED_BACK = "update_rolled_back"  # reason
    UPDATE_ALERT_CLEARED = "update_alert_cleared"
    PROVISIONING = "provisioning"  # result (applied|refused|start_failed), config, reason


@dataclass(frozen=True)
class Event:
    """One event. ``seq`` counts from 1 per run (``run`` tells runs apart): a consumer that sees
    a gap knows it missed events and can fetch the backlog."""

    kind: Kind
    seq: int
    time: float  # UNIX time
    run: str
    state: str  # the supervisor's state when it left
    summary: str = ""  # the one-line status ("idle, registered")
    button: str | None = None
    action: str | None = None
    target: str | None = None
    direction: str | None = None  # "incoming" | "outgoing"
    peer: str | None = None
    duration: float | None = None  # seconds answered (None: never answered)
    ended_by: str | None = None  # remote | button | command | max_duration | wrong_codes | ...
    reason: str | None = None
    by: str | None = None  # who opened the door / sent the command: dtmf | control | mqtt
    via: str | None = None  # how the DTMF keys came: rtp (RFC 4733) | info (SIP INFO)
    failures: int | None = None
    max_failures: int | None = None
    seconds: float | None = None
    until: float | None = None  # UNIX time
    server: str | None = None
    first: bool | None = None
    command: str | None = None
    accepted: bool | None = None
    result: str | None = None  # Kind.PROVISIONING: applied | refused | start_failed
    config: str | None = None  # Kind.PROVISIONING: the document's hash (never its content)
    snapshot: dict[str, Any] | None = None  # Kind.STATE: the retained state

    def as_dict(self) -> dict[str, Any]:
        """The JSON object consumers receive: every field that is set."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (value != "" or f.name != "summary"):
                out[f.name] = value.value if isinstance(value, Kind) else value
        return out


FIELDS = tuple(f.name for f in fields(Event))
