"""Pure-Python twin of the Cython core's codec and packet functions.

Owns the readable statement of the algorithms: ITU-T G.711 (as in the G.191 STL), RFC 3550 RTP
header packing/validation and RFC 4733 telephone-event payloads. Slow on purpose and never used
on the hot path; tests check that ``firmware._rtpcore`` gives identical output. Knows nothing
about sockets or timing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


def alaw_encode_sample(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4  # 12-bit magnitude, one's complement for negatives
    if ix > 15:
        exp = 1
        while ix > 31:
            ix >>= 1
            exp += 1
        ix = (ix - 16) + (exp << 4)
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def alaw_decode_sample(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    exp, mant = ix >> 4, ix & 0x0F
    if exp > 0:
        mant += 16
    mant = (mant << 4) + 8
    if exp > 1:
        mant <<= exp - 1
    return mant if code > 127 else -mant


def ulaw_encode_sample(x: int) -> int:
    mag = ((~x) >> 2) if x < 0 else (x >> 2)  # 14-bit magnitude
    mag = min(mag + 33, 0x1FFF)  # bias, clip
    seg, i = 1, mag >> 6
    while i:
        seg += 1
        i >>= 1
    code = ((8 - seg) << 4) | (0x0F - ((mag >> seg) & 0x0F))
    return code | 0x80 if x >= 0 else code


def ulaw_decode_sample(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    inv = (~code) & 0xFF
    exp, mant = (inv >> 4) & 7, inv & 0x0F
    step = 4 << (exp + 1)
    return sign * ((0x80 << exp) + step * mant + step // 2 - 4 * 33)


def _samples(pcm: bytes) -> tuple[int, ...]:
    if len(pcm) % 2:
        raise ValueError("PCM must be whole 16-bit samples")
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


def encode_ulaw(pcm: bytes) -> bytes:
    return bytes(ulaw_encode_sample(x) for x in _samples(pcm))


def encode_alaw(pcm: bytes) -> bytes:
    return bytes(alaw_encode_sample(x) for x in _samples(pcm))


def decode_ulaw(data: bytes) -> bytes:
    return struct.pack(f"<{len(data)}h", *(ulaw_decode_sample(c) for c in data))


def decode_alaw(data: bytes) -> bytes:
    return struct.pack(f"<{len(data)}h", *(alaw_decode_sample(c) for c in data))


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    payload: bytes


def rtp_pack(payload_type: int, marker: bool, sequence: int, timestamp: int, ssrc: int,
             payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | (payload_type & 0x7F),
                       sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF) + payload


def rtp_parse(data: bytes) -> RtpPacket:
    """Validate and parse an RTP packet (RFC 3550 §5.1, A.1); ValueError says why not."""
    if len(data) < 12:
        raise ValueError("shorter than an RTP header")
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    if b0 >> 6 != 2:
        raise ValueError("RTP version is not 2")
    end = len(data)
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or pad > end - 12:
            raise ValueError("bad RTP padding")
        end -= pad
    offset = 12 + 4 * (b0 & 0x0F)
    if offset > end:
        raise ValueError("CSRC list longer than the packet")
    csrcs = struct.unpack_from(f"!{b0 & 0x0F}I", data, 12)
    if b0 & 0x10:
        if offset + 4 > end:
            raise ValueError("truncated header extension")
        words = struct.unpack_from("!H", data, offset + 2)[0]
        offset += 4 + 4 * words
        if offset > end:
            raise ValueError("header extension longer than the packet")
    return RtpPacket(b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, csrcs, data[offset:end])


def event_pack(event: int, end: bool, volume: int, duration: int) -> bytes:
    """RFC 4733 §2.3 telephone-event payload."""
    return struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration)


def event_parse(payload: bytes) -> tuple[int, bool, int, int]:
    if len(payload) < 4:
        raise ValueError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return event, bool(flags & 0x80), flags & 0x3F, duration


DTMF_EVENTS = "0123456789*#ABCD"
