"""Type stub for firmware/_conceal.pyx."""

from typing_extensions import Buffer, disjoint_base  # collections.abc in 3.12

@disjoint_base
class Concealer:
    def good(self, pcm: Buffer) -> bytes: ...
    def conceal(self, samples: int) -> bytes: ...
