"""Type stub for firmware/_jitter.pyx."""

from collections.abc import Buffer

JB_OK: int
JB_LATE: int
JB_DUPLICATE: int
JB_RESYNC: int
JB_TOO_EARLY: int

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
    def __init__(self, frame_samples: int = 160, target: int = 2, min_frames: int = 1,
                 max_frames: int = 10) -> None: ...
    def reset(self) -> None: ...
    def put(self, ts: int, seq: int, ssrc: int, payload: Buffer) -> int: ...
    def pop(self) -> bytes | None: ...
    @property
    def depth(self) -> int: ...
