"""Type stub for the packet-transform hook (firmware/core/_transform.pyx)."""

from typing_extensions import Buffer, disjoint_base  # Buffer: collections.abc in 3.12

REASONS: dict[int, str]
TRAILER_MAX: int

class TransformError(ValueError):
    reason: str
    def __init__(self, reason: str, what: str) -> None: ...

@disjoint_base
class PacketTransform:
    def protect_rtp(self, packet: Buffer) -> bytes: ...
    def unprotect_rtp(self, packet: Buffer) -> bytes: ...
    def protect_rtcp(self, packet: Buffer) -> bytes: ...
    def unprotect_rtcp(self, packet: Buffer) -> bytes: ...
