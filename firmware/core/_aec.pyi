"""Type stub for the echo cancellers (firmware/core/_aec.pyx)."""

from typing import Self

from typing_extensions import disjoint_base

from firmware.core._processor import CaptureProcessor

KINDS: tuple[str, ...]

class AecError(ValueError): ...

@disjoint_base
class EchoCanceller(CaptureProcessor):
    def __new__(cls, *args: object, **kwargs: object) -> Self: ...  # a Cython __cinit__
    def __init__(self, tail_ms: int = 128, device_delay: int = 0) -> None: ...
    device_delay: int
    tail: int
    margin: int
    delay: int
    delay_changes: int
    errors: int
    frames: int
    block: int
    @property
    def name(self) -> str: ...

@disjoint_base
class SpeexCanceller(EchoCanceller):
    def __init__(self, tail_ms: int = 128, noise_suppression: bool = False, agc: bool = False,
                 device_delay: int = 0, frame_samples: int = 160) -> None: ...

@disjoint_base
class WebRtcCanceller(EchoCanceller):
    def __init__(self, tail_ms: int = 128, noise_suppression: bool = False, agc: bool = False,
                 device_delay: int = 0) -> None: ...

def webrtc_version() -> str: ...
def unavailable(kind: str) -> str | None: ...
def create(kind: str, tail_ms: int = 128, noise_suppression: bool = False, agc: bool = False,
           device_delay: int = 0, frame_samples: int = 160) -> EchoCanceller | None: ...
