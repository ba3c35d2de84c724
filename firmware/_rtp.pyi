"""Type stub for firmware/_rtp.pyx."""

from collections.abc import Buffer

RTP_ERRORS: dict[int, str]

def rtp_pack(payload_type: int, marker: bool, sequence: int, timestamp: int, ssrc: int,
             payload: Buffer) -> bytes: ...
def rtp_parse(data: Buffer) -> tuple[int, bool, int, int, int, bytes]: ...
