"""Type stub for firmware/core/_drift.pyx."""

from typing_extensions import Buffer, disjoint_base  # collections.abc in 3.12

@disjoint_base
class Resampler: ...

@disjoint_base
class FillControl:
    kp: float
    ki: float
    limit: float
    floor: float
    @property
    def offset(self) -> float: ...
    @property
    def average(self) -> float: ...
    @property
    def max_level(self) -> int: ...
    @property
    def target_level(self) -> float: ...
    @property
    def settled(self) -> bool: ...

@disjoint_base
class DriftCompensator:
    frame_samples: int
    play_rs: Resampler
    cap_rs: Resampler
    play_ctl: FillControl
    cap_ctl: FillControl
    play_on: bool
    cap_on: bool
    def __init__(self, frame_samples: int = 160, playback: bool = True,
                 capture: bool = True) -> None: ...
    def drift_ppm(self) -> float: ...
    def stats(self) -> dict[str, float]: ...
    def playback(self, frame: Buffer, level: int, since_ns: int = 0) -> bytes: ...
    def capture_need(self, level: int, since_ns: int = 0) -> int: ...
    def capture(self, raw: Buffer) -> tuple[bytes, int]: ...

@disjoint_base
class ClockSlip:
    frame_samples: int
    ticks: int
    slips: int
    samples: int
    last_ns: int
    def __init__(self, frame_samples: int = 160) -> None: ...
    def tick(self, now_ns: int, samples: int = -1) -> int: ...
    @property
    def ppm(self) -> float: ...
