"""Type stub for firmware/core/_dtmf.pyx."""

from typing_extensions import Buffer, disjoint_base  # collections.abc in 3.12

DTMF_EVENTS: str

@disjoint_base
class DtmfSender:
    duration_ms: int
    events_sent: int
    def queue_digits(self, digits: str) -> int: ...
    @property
    def pending(self) -> int: ...

@disjoint_base
class DtmfReceiver:
    events_received: int
    notify_fd: int
    def receive(self, payload: Buffer, ts: int) -> int: ...
    def take(self) -> str: ...
