"""The one place where the intercom's events leave the box: App publishes a ``Notice`` (the
state changed, the door opened, a call ended) and every consumer subscribed to the ``Outbox``
receives it. Today the consumer is systemd's status line; MQTT and webhooks hang off here.

Owns the notice's shape and the fan-out: a consumer that raises is logged and never stops the
others nor the door. Must not know the consumers' transports (systemd, a broker, HTTP) nor how
the intercom decides what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger("intercom")


class Kind(StrEnum):
    STATE = "state"  # the supervisor entered another state
    DOOR_OPENED = "door_opened"  # the relay pulsed
    CALL_ENDED = "call_ended"  # detail: why


@dataclass(frozen=True)
class Notice:
    kind: Kind
    state: str  # the supervisor's state when the notice left
    summary: str  # the one-line status ("idle, registered")
    detail: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind.value, "state": self.state, "summary": self.summary,
                "detail": self.detail}


Consumer = Callable[[Notice], object]


class Outbox:
    """The consumers and the fan-out. A state notice leaves once per change (a nested
    dispatch may report the same change twice)."""

    def __init__(self) -> None:
        self._consumers: list[Consumer] = []
        self._state: str | None = None  # the state the last notice carried

    def subscribe(self, consumer: Consumer) -> Callable[[], None]:
        """Add a consumer; returns what removes it again."""
        self._consumers.append(consumer)
        return lambda: self._consumers.remove(consumer)

    def publish(self, notice: Notice) -> None:
        if notice.kind is Kind.STATE and notice.state == self._state:
            return
        self._state = notice.state
        for consumer in list(self._consumers):
            try:
                consumer(notice)
            except Exception:  # one broken consumer never stops the door nor the others
                log.exception("a consumer of the %s notice failed", notice.kind.value)
