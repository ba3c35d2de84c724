"""Type stub for firmware/core/_jitter.pyx."""

from typing import Self

from typing_extensions import Buffer, disjoint_base  # collections.abc in 3.12

JB_OK: int
JB_LATE: int
JB_DUPLICATE: int
JB_RESYNC: int
JB_TOO_EARLY: int

@disjoint_base
class JitterBuffer:
    frame_samples: int
    target: int
    min_frames: int
    max_frames: int
    started: bool
    clean: bool
    late: int
    duplicates: int
    reordered: int
    resyncs: int
    too_early: int
    shrinks: int
    grows: int
    slip_pending: int
    slip_wait: int
    slips_held: int
    slips_dropped: int
    def __new__(cls, frame_samples: int = 160, target: int = 2, min_frames: int = 1,
                 max_frames: int = 10) -> Self: ...  # a Cython __cinit__
    def reset(self) -> None: ...
    def put(self, ts: int, seq: int, ssrc: int, payload: Buffer) -> int: ...
    def pop(self) -> bytes | None: ...
    def peek(self, ahead: int = 0) -> bytes | None: ...
    def shed_at_pauses(self, law: int) -> None: ...
    def slip(self, frames: int) -> None: ...
    @property
    def depth(self) -> int: ...
