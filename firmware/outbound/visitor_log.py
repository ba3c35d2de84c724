"""The visitor log: the last N building events in RAM (the root is read-only, and a log of who
rang is nobody's business after a reboot), and their one-line rendering for ``intercom events``.

Owns the bound and the wording of a line. Must not know where the events come from nor how
they reach a reader (control socket, MQTT backlog).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from .event import Event, Kind

# the fields a line shows after the kind, in this order (the rest stay in --json)
_SHOWN = ("button", "target", "direction", "peer", "by", "via", "command", "accepted",
          "duration", "ended_by", "reason", "failures", "max_failures", "seconds", "server")


class VisitorLog:
    """A ring of the last ``size`` events (every kind but the retained state's changes)."""

    def __init__(self, size: int) -> None:
        self._events: deque[Event] = deque(maxlen=max(1, size))

    def add(self, event: Event) -> None:
        if event.kind is not Kind.STATE:
            self._events.append(event)

    def recent(self, count: int | None = None) -> list[dict[str, Any]]:
        """The last ``count`` (all when None) events, oldest first, as JSON objects."""
        events = list(self._events)
        if count is not None:
            events = events[-count:] if count > 0 else []
        return [e.as_dict() for e in events]

    def __len__(self) -> int:
        return len(self._events)


def line(event: dict[str, Any]) -> str:
    """``2026-12-04 10:01:02  #12 door_opened by=dtmf via=rtp peer=5001`` (local time)."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(event.get("time", 0))))
    parts = [f"{when}  #{event.get('seq', '?')} {event.get('kind', '?')}"]
    for name in _SHOWN:
        value = event.get(name)
        if value is None:
            continue
        if isinstance(value, float):
            value = f"{value:.1f}"
        text = str(value)
        parts.append(f"{name}={text!r}" if " " in text else f"{name}={text}")
    return " ".join(parts)
