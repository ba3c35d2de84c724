"""Type stub for the Cython media core (firmware/_rtpcore.pyx)."""

from typing import Self

from typing_extensions import Buffer, disjoint_base  # Buffer: collections.abc in 3.12

from ._processor import CaptureProcessor
from ._transform import PacketTransform

ULAW: int
ALAW: int
DTMF_EVENTS: str
RTP_ERRORS: dict[int, str]
JB_OK: int
JB_LATE: int
JB_DUPLICATE: int
JB_RESYNC: int
JB_TOO_EARLY: int

def encode_ulaw(pcm: Buffer) -> bytes: ...
def encode_alaw(pcm: Buffer) -> bytes: ...
def decode_ulaw(data: Buffer) -> bytes: ...
def decode_alaw(data: Buffer) -> bytes: ...
def rtp_pack(payload_type: int, marker: bool, sequence: int, timestamp: int, ssrc: int,
             payload: Buffer) -> bytes: ...
def rtp_parse(data: Buffer) -> tuple[int, bool, int, int, int, bytes]: ...

@disjoint_base
class PcmFifo:
    overruns: int
    def __new__(cls, capacity: int = 8000) -> Self: ...  # a Cython __cinit__
    def write(self, pcm: Buffer) -> int: ...
    def read(self, max_samples: int = -1) -> bytes: ...
    def __len__(self) -> int: ...

@disjoint_base
class JitterBuffer:
    frame_samples: int
    target: int
    min_frames: int
    max_frames: int
    started: bool
    late: int
    duplicates: int
    reordered: int
    resyncs: int
    too_early: int
    shrinks: int
    grows: int
    def __new__(cls, frame_samples: int = 160, target: int = 2, min_frames: int = 1,
                max_frames: int = 10) -> Self: ...  # a Cython __cinit__
    def reset(self) -> None: ...
    def put(self, ts: int, seq: int, ssrc: int, payload: Buffer) -> int: ...
    def pop(self) -> bytes | None: ...
    @property
    def depth(self) -> int: ...

@disjoint_base
class MediaStream:
    payload_type: int
    dtmf_payload_type: int
    ptime_ms: int
    law: int
    source: PcmFifo
    sink: PcmFifo
    jb: JitterBuffer
    dtmf_duration_ms: int
    realtime_ok: bool
    spin_us: int
    tx_gain_q12: int
    rx_gain_q12: int
    def __init__(self, rtp_fd: int, rtcp_fd: int, payload_type: int = 0, ptime_ms: int = 20,
                 dtmf_payload_type: int = 101, ssrc: int = 0, seq: int = 0, ts: int = 0,
                 latch: bool = False, jitter_target_ms: int = 40, jitter_min_ms: int = 20,
                 jitter_max_ms: int = 200, cname: str = "intercom",
                 transform: PacketTransform | None = None,
                 processor: CaptureProcessor | None = None, notify_fd: int = -1) -> None: ...
    @property
    def transform(self) -> PacketTransform | None: ...
    @property
    def processor(self) -> CaptureProcessor | None: ...
    def set_remote(self, host: str, port: int, rtcp_port: int = 0) -> None: ...
    def set_direction(self, send: bool, receive: bool) -> None: ...
    def send_dtmf(self, digits: str) -> int: ...
    def received_digits(self) -> str: ...
    def stop(self) -> None: ...
    def stats(self) -> dict[str, int | float | bool]: ...
    def run(self, rt_priority: int = 0) -> None: ...
