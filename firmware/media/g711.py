"""The stable G.711 codec interface, backed by the Cython core (bit-exact to ITU-T G.191).

Owns nothing but the names other code and tools rely on: ``encode_ulaw(pcm) -> bytes``,
``decode_ulaw(data) -> bytes``, ``encode_alaw``, ``decode_alaw`` on little-endian signed 16-bit
PCM. Knows nothing about RTP or audio devices.
"""

from __future__ import annotations

from .._rtpcore import decode_alaw, decode_ulaw, encode_alaw, encode_ulaw

__all__ = ["decode_alaw", "decode_ulaw", "encode_alaw", "encode_ulaw"]
