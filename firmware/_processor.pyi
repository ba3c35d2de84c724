"""Type stub for the capture-processor hook (firmware/_processor.pyx)."""

from collections.abc import Buffer

class CaptureProcessor:
    def playback(self, pcm: Buffer, queued: int = 0) -> None: ...
    def capture(self, pcm: Buffer, queued: int = 0) -> bytes: ...
