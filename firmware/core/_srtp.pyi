"""Type stub for the SRTP transform on libsrtp2 (firmware/core/_srtp.pyx)."""

from typing_extensions import disjoint_base

from ._transform import PacketTransform

SUITES: dict[str, int]
KEY_LENGTH: int

@disjoint_base
class SrtpTransform(PacketTransform):
    @property
    def suite(self) -> str: ...
    @property
    def inbound_suite(self) -> str: ...
    def __init__(self, suite: str, local_key: bytes, remote_key: bytes) -> None: ...
    def set_outbound(self, suite: str, local_key: bytes) -> None: ...
    def set_inbound(self, suite: str, remote_key: bytes) -> None: ...
