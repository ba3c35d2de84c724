"""Type stub for firmware/core/_card.pyx."""

from typing_extensions import Buffer, disjoint_base  # collections.abc in 3.12

RATE: int

class CardError(OSError):
    def __init__(self, err: int, message: str) -> None: ...

@disjoint_base
class Card:
    capture_name: str
    playback_name: str
    period: int
    play_period: int
    play_buffer: int
    cap_buffer: int
    prefill: int
    gone: bool
    started: bool
    play_running: bool
    error: int
    capture_xruns: int
    playback_xruns: int
    frames_read: int
    frames_written: int
    playback_dropped: int
    def __init__(self, capture: str, playback: str, period: int = 160, play_period: int = 80,
                 play_periods: int = 4, prefill: int = 120) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def start(self) -> bool: ...
    def wait(self, timeout_ms: int) -> int: ...
    def read(self, n: int) -> bytes: ...
    def write(self, pcm: Buffer) -> int: ...
    @property
    def play_delay(self) -> int: ...
    @property
    def capture_avail(self) -> int: ...
    def stats(self) -> dict[str, int | bool]: ...
