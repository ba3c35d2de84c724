"""Where the intercom's events leave the box: the ``Outbox`` numbers and stamps each building
event (``firmware.outbound.event``), keeps the last ones (``visitor_log``) and hands every event
to the subscribed consumers: systemd's status line, MQTT (``mqtt``, with Home Assistant's
discovery in ``discovery``), signed webhooks (``webhook``). ``chronicle`` turns what App sees
(supervisor events and commands, SIP events, control and MQTT commands) into those events.

Owns the numbering, the fan-out and the rule that a consumer that raises is logged and never
stops the others nor the door. A consumer must return at once: the network ones only queue
(bounded, dropping the oldest) for their own thread. Must not know how the intercom decides
what happened.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from .event import Event, Kind
from .visitor_log import VisitorLog

__all__ = ["Consumer", "Event", "Kind", "Outbox"]

log = logging.getLogger("intercom")

Consumer = Callable[[Event], object]


class Outbox:
    """The consumers, the sequence numbers and the visitor log. A state event leaves only
    when the retained state differs from the last one sent."""

    def __init__(self, keep: int = 100, wallclock: Callable[[], float] = time.time) -> None:
        self._consumers: list[Consumer] = []
        self._seq = 0
        self._wallclock = wallclock
        self.run = secrets.token_hex(4)  # tells this run's sequence numbers from the next's
        self.log = VisitorLog(keep)
        self.snapshot: dict[str, Any] | None = None  # the last retained state sent

    def subscribe(self, consumer: Consumer) -> Callable[[], None]:
        """Add a consumer; returns what removes it again."""
        self._consumers.append(consumer)
        return lambda: self._consumers.remove(consumer)

    def emit(self, kind: Kind, state: str, **fields: Any) -> Event | None:
        """Number, stamp, keep and fan out one event; None when a state event repeats the
        last state."""
        if kind is Kind.STATE:
            if fields.get("snapshot") == self.snapshot:
                return None
            self.snapshot = fields.get("snapshot")
        self._seq += 1
        event = Event(kind, self._seq, round(self._wallclock(), 3), self.run, state, **fields)
        self.log.add(event)
        for consumer in list(self._consumers):
            try:
                consumer(event)
            except Exception:  # one broken consumer never stops the door nor the others
                log.exception("a consumer of the %s event failed", kind.value)
        return event
