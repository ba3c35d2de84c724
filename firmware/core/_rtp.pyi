"""Type stub for firmware/core/_rtp.pyx."""

from typing_extensions import Buffer  # collections.abc in 3.12

RTP_ERRORS: dict[int, str]

def rtp_pack(payload_type: int, marker: bool, sequence: int, timestamp: int, ssrc: int,
             payload: Buffer) -> bytes: ...
def rtp_parse(data: Buffer) -> tuple[int, bool, int, int, int, bytes]: ...
