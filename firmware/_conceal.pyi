"""Type stub for firmware/_conceal.pyx."""

from collections.abc import Buffer

class Concealer:
    def good(self, pcm: Buffer) -> bytes: ...
    def conceal(self, samples: int) -> bytes: ...
