"""Type stub for the packet-loss concealer (firmware/core/_plc.pyx)."""

from typing_extensions import Buffer, disjoint_base  # Buffer: collections.abc in 3.12

from ._conceal import Concealer

@disjoint_base
class PitchConcealer(Concealer):
    good_frames: int
    concealed_frames: int
    merges: int
    bridged_frames: int
    def reset(self) -> None: ...
    def good(self, pcm: Buffer) -> bytes: ...
    def conceal(self, n: int = 160) -> bytes: ...
    @property
    def pitch_lag(self) -> int: ...
