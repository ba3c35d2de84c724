"""Type stub for the Cython media core (firmware/_rtpcore.pyx)."""

from typing import Self

from typing_extensions import Buffer, disjoint_base  # collections.abc in 3.12

from .core._conceal import Concealer
from .core._drift import DriftCompensator
from .core._dtmf import DTMF_EVENTS as DTMF_EVENTS
from .core._g711 import ALAW as ALAW
from .core._g711 import ULAW as ULAW
from .core._g711 import decode_alaw as decode_alaw
from .core._g711 import decode_ulaw as decode_ulaw
from .core._g711 import encode_alaw as encode_alaw
from .core._g711 import encode_ulaw as encode_ulaw
from .core._jitter import JB_DUPLICATE as JB_DUPLICATE
from .core._jitter import JB_LATE as JB_LATE
from .core._jitter import JB_OK as JB_OK
from .core._jitter import JB_RESYNC as JB_RESYNC
from .core._jitter import JB_TOO_EARLY as JB_TOO_EARLY
from .core._jitter import JitterBuffer as JitterBuffer
from .core._mediacore import MediaCore as MediaCore
from .core._processor import CaptureProcessor
from .core._rtp import RTP_ERRORS as RTP_ERRORS
from .core._rtp import rtp_pack as rtp_pack
from .core._rtp import rtp_parse as rtp_parse
from .core._transform import PacketTransform

@disjoint_base
class PcmFifo:
    overruns: int
    last_push_ns: int
    last_pull_ns: int
    def __new__(cls, capacity: int = 8000) -> Self: ...  # a Cython __cinit__
    def write(self, pcm: Buffer, now_ns: int = -1) -> int: ...
    def read(self, max_samples: int = -1, now_ns: int = -1) -> bytes: ...
    def __len__(self) -> int: ...

@disjoint_base
class MediaStream:
    @property
    def payload_type(self) -> int: ...
    @property
    def dtmf_payload_type(self) -> int: ...
    @property
    def ptime_ms(self) -> int: ...
    @property
    def law(self) -> int: ...
    source: PcmFifo
    sink: PcmFifo
    core: MediaCore
    drift: DriftCompensator
    dtmf_duration_ms: int
    tx_gain_q12: int
    rx_gain_q12: int
    spin_us: int
    realtime_ok: bool
    discard_playback: bool
    @property
    def jb(self) -> JitterBuffer: ...
    def __init__(self, rtp_fd: int, rtcp_fd: int, payload_type: int = 0, ptime_ms: int = 20,
                 dtmf_payload_type: int = 101, ssrc: int = 0, seq: int = 0, ts: int = 0,
                 latch: bool = False, jitter_target_ms: int = 40, jitter_min_ms: int = 0,
                 jitter_max_ms: int = 200, cname: str = "intercom",
                 transform: PacketTransform | None = None,
                 processor: CaptureProcessor | None = None,
                 concealer: Concealer | None = None, notify_fd: int = -1) -> None: ...
    @property
    def transform(self) -> PacketTransform | None: ...
    @property
    def processor(self) -> CaptureProcessor | None: ...
    def set_capture_cycle(self, pcm: Buffer) -> None: ...
    @property
    def cycle_position(self) -> int: ...
    def enable_drift_control(self, playback: bool, capture: bool) -> None: ...
    def set_remote(self, host: str, port: int, rtcp_port: int = 0) -> None: ...
    def clear_remote(self) -> None: ...
    @property
    def has_remote(self) -> bool: ...
    def set_direction(self, send: bool, receive: bool) -> None: ...
    def send_dtmf(self, digits: str) -> int: ...
    def received_digits(self) -> str: ...
    def stop(self) -> None: ...
    def stats(self) -> dict[str, int | float | bool]: ...
    def run(self, rt_priority: int = 0) -> None: ...
