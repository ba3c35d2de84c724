"""Type stub for the echo cancellers (firmware/_aec.pyx)."""

from firmware._processor import CaptureProcessor

KINDS: tuple[str, ...]

class AecError(ValueError): ...

class EchoCanceller(CaptureProcessor):
    device_delay: int
    tail: int
    margin: int
    delay: int
    delay_changes: int
    errors: int
    frames: int
    @property
    def name(self) -> str: ...

class SpeexCanceller(EchoCanceller):
    def __init__(self, tail_ms: int = 128, noise_suppression: bool = False, agc: bool = False,
                 device_delay: int = 0) -> None: ...

class WebRtcCanceller(EchoCanceller):
    def __init__(self, tail_ms: int = 128, noise_suppression: bool = False, agc: bool = False,
                 device_delay: int = 0) -> None: ...

def webrtc_version() -> str: ...
def unavailable(kind: str) -> str | None: ...
def create(kind: str, tail_ms: int = 128, noise_suppression: bool = False, agc: bool = False,
           device_delay: int = 0) -> EchoCanceller | None: ...
