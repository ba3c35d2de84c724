"""Type stub for firmware/core/_mediacore.pyx."""

from typing_extensions import Buffer, disjoint_base  # collections.abc in 3.12

from ._conceal import Concealer
from ._dtmf import DtmfReceiver, DtmfSender
from ._jitter import JitterBuffer
from ._rtcp import Rtcp

@disjoint_base
class MediaCore:
    payload_type: int
    dtmf_payload_type: int
    ptime_ms: int
    law: int
    frame_samples: int
    tx_gain_q12: int
    rx_gain_q12: int
    jb: JitterBuffer
    rtcp: Rtcp
    dtmf_out: DtmfSender
    dtmf_in: DtmfReceiver
    plc: Concealer
    def __init__(self, payload_type: int = 0, ptime_ms: int = 20, dtmf_payload_type: int = 101,
                 ssrc: int = 0, seq: int = 0, ts: int = 0, jitter_target_ms: int = 40,
                 jitter_min_ms: int = 0, jitter_max_ms: int = 200,
                 cname: str = "intercom", concealer: Concealer | None = None) -> None: ...
    def set_direction(self, send: bool, receive: bool) -> None: ...
    def send_dtmf(self, digits: str) -> int: ...
    def received_digits(self) -> str: ...
    def stats(self) -> dict[str, int | float | bool]: ...
    def receive_rtp(self, packet: Buffer, arrival_ns: int) -> int: ...
    def receive_rtcp(self, packet: Buffer, now_ns: int) -> int: ...
    def tick(self, now_ns: int, wall_ns: int, captured: Buffer = b"",
             peer: bool = True) -> tuple[list[tuple[str, bytes]], bytes]: ...
    def bye(self, now_ns: int, wall_ns: int) -> bytes: ...
