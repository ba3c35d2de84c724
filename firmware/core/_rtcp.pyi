"""Type stub for firmware/core/_rtcp.pyx."""

from typing_extensions import Buffer, disjoint_base  # collections.abc in 3.12

@disjoint_base
class Rtcp:
    seq_init: bool
    remote_ssrc: int
    received: int
    received_octets: int
    rtcp_received: int
    jitter: float
    lsr: int
    lsr_arrival_ns: int
    def __init__(self, cname: str = "intercom") -> None: ...
    def count(self, ssrc: int, seq: int, ts: int, length: int, arrival_ns: int) -> None: ...
    def receive(self, packet: Buffer, now_ns: int) -> bool: ...
    def report(self, ssrc: int, rtp_ts: int, sent: int, sent_octets: int, now_ns: int,
               wall_ns: int, bye: bool = False) -> bytes: ...
    @property
    def extended_max(self) -> int: ...
    @property
    def lost(self) -> int: ...
