"""Type stub for the capture-processor hook (firmware/core/_processor.pyx)."""

from typing_extensions import Buffer, disjoint_base  # Buffer: collections.abc in 3.12

@disjoint_base
class CaptureProcessor:
    def playback(self, pcm: Buffer, queued: int = 0) -> None: ...
    def capture(self, pcm: Buffer, queued: int = 0) -> bytes: ...
