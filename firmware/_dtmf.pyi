"""Type stub for firmware/_dtmf.pyx."""

from collections.abc import Buffer

DTMF_EVENTS: str

class DtmfSender:
    duration_ms: int
    events_sent: int
    def queue_digits(self, digits: str) -> int: ...
    @property
    def pending(self) -> int: ...

class DtmfReceiver:
    events_received: int
    def receive(self, payload: Buffer, ts: int) -> int: ...
    def take(self) -> str: ...
