"""The Cython core against the ITU-T G.191 vectors and its pure-Python twin."""

from __future__ import annotations

import collections
import os
import random
import struct
from pathlib import Path

import pytest

from tests import compiled

pytest.importorskip("firmware._rtpcore", reason=compiled.REASON)
from firmware import _rtpcore as core
from firmware.media import _reference as ref
from firmware.media import g711

pytestmark = pytest.mark.compiled

ITU = Path(__file__).resolve().parents[1] / "data" / "itu-g711"


def itu(name: str) -> bytes:
    return (ITU / name).read_bytes()


def codes(name: str) -> bytes:
    """The 8-bit codes stored one per little-endian 16-bit word."""
    words = struct.unpack("<65536H", itu(name))
    assert max(words) < 256
    return bytes(words)


def mismatches(a: bytes, b: bytes, width: int = 1) -> int:
    assert len(a) == len(b)
    return sum(a[i:i + width] != b[i:i + width] for i in range(0, len(a), width))


def test_ulaw_encode_bit_exact() -> None:
    assert mismatches(g711.encode_ulaw(itu("sweep.src")), codes("sweep-r.u")) == 0


def test_alaw_encode_bit_exact() -> None:
    assert mismatches(g711.encode_alaw(itu("sweep.src")), codes("sweep-r.a")) == 0


def test_ulaw_decode_bit_exact() -> None:
    assert mismatches(g711.decode_ulaw(codes("sweep-r.u")), itu("sweep-r.u-u"), 2) == 0
    assert g711.decode_ulaw(g711.encode_ulaw(itu("sweep.src"))) == itu("sweep-r.reu")


def test_alaw_decode_bit_exact() -> None:
    assert mismatches(g711.decode_alaw(codes("sweep-r.a")), itu("sweep-r.a-a"), 2) == 0
    assert g711.decode_alaw(g711.encode_alaw(itu("sweep.src"))) == itu("sweep-r.rea")


def test_reference_twin_is_bit_exact_too() -> None:
    src = itu("sweep.src")
    assert ref.encode_ulaw(src) == codes("sweep-r.u")
    assert ref.encode_alaw(src) == codes("sweep-r.a")
    assert ref.decode_ulaw(codes("sweep-r.u")) == itu("sweep-r.u-u")
    assert ref.decode_alaw(codes("sweep-r.a")) == itu("sweep-r.a-a")


def test_core_and_twin_agree_on_random_input() -> None:
    rnd = random.Random(711)
    for size in (0, 2, 320, 4096):
        pcm = bytes(rnd.randrange(256) for _ in range(size))
        assert core.encode_ulaw(pcm) == ref.encode_ulaw(pcm)
        assert core.encode_alaw(pcm) == ref.encode_alaw(pcm)
        enc = bytes(rnd.randrange(256) for _ in range(size // 2))
        assert core.decode_ulaw(enc) == ref.decode_ulaw(enc)
        assert core.decode_alaw(enc) == ref.decode_alaw(enc)


def test_codec_accepts_any_buffer_and_rejects_half_samples() -> None:
    pcm = os.urandom(320)
    assert core.encode_ulaw(bytearray(pcm)) == core.encode_ulaw(memoryview(pcm)) == \
        core.encode_ulaw(pcm)
    with pytest.raises(ValueError):
        core.encode_ulaw(b"\x00\x01\x02")
    with pytest.raises(ValueError):
        ref.encode_alaw(b"\x00")


def test_rtp_pack_parse_matches_twin() -> None:
    rnd = random.Random(3550)
    for _ in range(200):
        args = (rnd.choice([0, 8, 101]), rnd.random() < 0.5, rnd.randrange(65536),
                rnd.randrange(2**32), rnd.randrange(2**32), os.urandom(rnd.randrange(0, 200)))
        packed = core.rtp_pack(*args)
        assert packed == ref.rtp_pack(*args)
        p = ref.rtp_parse(packed)
        assert core.rtp_parse(packed) == (p.payload_type, p.marker, p.sequence, p.timestamp,
                                          p.ssrc, p.payload)


def _header(b0: int = 0x80, extra: bytes = b"") -> bytes:
    return bytes([b0, 0]) + struct.pack("!HII", 1, 2, 3) + extra


@pytest.mark.parametrize("data,reason", [
    (b"\x80\x00\x00", "shorter than an RTP header"),
    (_header(0x40), "RTP version is not 2"),
    (_header(0xA0, b"ab\x05"), "bad RTP padding"),
    (_header(0xA0, b"ab\x00"), "bad RTP padding"),
    (_header(0x82, b"\x00\x00\x00\x01"), "CSRC list longer than the packet"),
    (_header(0x90, b"\x00\x00"), "truncated header extension"),
    (_header(0x90, b"\xbe\xde\x00\x09"), "header extension longer than the packet"),
])
def test_rtp_validation_both_implementations(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        core.rtp_parse(data)
    with pytest.raises(ValueError, match=reason):
        ref.rtp_parse(data)


def test_rtp_csrc_extension_and_padding_are_skipped() -> None:
    data = _header(0xB1, b"\x00\x00\x00\x07" + b"\xbe\xde\x00\x01" + b"\x11\x22\x33\x44"
                   + b"payload" + b"\x00\x00\x03")
    assert core.rtp_parse(data)[5] == b"payload"
    p = ref.rtp_parse(data)
    assert p.payload == b"payload" and p.csrcs == (7,)


def test_telephone_event_payload() -> None:
    packed = ref.event_pack(11, True, 10, 800)
    assert packed == b"\x0b\x8a\x03\x20"
    assert ref.event_parse(packed) == (11, True, 10, 800)
    with pytest.raises(ValueError):
        ref.event_parse(b"\x01")


def test_fifo() -> None:
    fifo = core.PcmFifo(100)
    assert fifo.write(struct.pack("<3h", 1, -2, 3)) == 3 and len(fifo) == 3
    assert fifo.read(2) == struct.pack("<2h", 1, -2)
    fifo.write(bytes(2 * 150))  # overflow: the oldest go, counted
    assert len(fifo) == 100 and fifo.overruns == 51
    assert fifo.read() == bytes(200) and fifo.read() == b""


def test_fifo_wraps_like_a_queue() -> None:
    """Random writes and reads around the ring's end, overflows included, against a plain
    Python queue: the same samples come out in the same order, the same ones are dropped."""
    rng = random.Random(12)
    fifo, model, dropped = core.PcmFifo(97), collections.deque[int](), 0
    for _ in range(3000):
        if rng.random() < 0.5:
            samples = [rng.randrange(-32768, 32768) for _ in range(rng.randrange(0, 130))]
            assert fifo.write(struct.pack(f"<{len(samples)}h", *samples)) == len(samples)
            model.extend(samples)
            while len(model) > 97:
                model.popleft()
                dropped += 1
        else:
            n = rng.randrange(0, 130)
            got = fifo.read(n)
            want = [model.popleft() for _ in range(min(n, len(model)))]
            assert got == struct.pack(f"<{len(want)}h", *want)
        assert len(fifo) == len(model) and fifo.overruns == dropped
    assert dropped > 0


class TestJitterBuffer:
    def frames(self, jb: core.JitterBuffer, n: int) -> list[bytes | None]:
        return [jb.pop() for _ in range(n)]

    def test_in_order_with_initial_delay(self) -> None:
        jb = core.JitterBuffer(160, target=2)
        out = []
        for i in range(5):  # one packet a period, as a sender paces them
            jb.put(1000 + 160 * i, i, 7, bytes([i]) * 160)
            out += self.frames(jb, 1)
        out += self.frames(jb, 2)
        assert out[:2] == [None, None], "two frames of playout delay"
        assert [f[0] for f in out[2:]] == [0, 1, 2, 3, 4]
        assert jb.shrinks == 0

    def test_reorder_duplicate_late(self) -> None:
        jb = core.JitterBuffer(160, target=2, max_frames=2)
        codes, out = [], []
        for batch in ([0], [2, 1], [2], [3], [], []):
            codes += [jb.put(160 * i, i, 1, bytes([i]) * 160) for i in batch]
            out += self.frames(jb, 1)
        assert codes == [core.JB_OK, core.JB_OK, core.JB_OK, core.JB_DUPLICATE, core.JB_OK]
        assert jb.reordered == 1 and jb.duplicates == 1
        assert [f[0] if f else None for f in out] == [None, None, 0, 1, 2, 3]
        assert jb.put(160 * 1, 1, 1, b"x" * 160) == core.JB_LATE and jb.late == 1

    def test_late_packets_grow_the_delay(self) -> None:
        jb = core.JitterBuffer(160, target=1, max_frames=4)
        jb.put(0, 0, 1, b"a" * 160)
        self.frames(jb, 3)
        assert jb.put(160, 1, 1, b"b" * 160) == core.JB_LATE
        assert jb.target == 2 and jb.grows == 1

    def test_deep_buffer_shrinks(self) -> None:
        jb = core.JitterBuffer(160, target=4, min_frames=1)
        ts = 0
        for _ in range(120):
            jb.put(ts, ts // 160, 1, b"z" * 160)
            jb.put(ts + 160 * 6, ts // 160 + 6, 1, b"z" * 160)  # a burst arrives early
            jb.pop()
            ts += 160
        assert jb.shrinks >= 1 and jb.target < 4

    def test_ssrc_change_and_timestamp_jump_resync(self) -> None:
        jb = core.JitterBuffer(160, target=1)
        jb.put(0, 0, 1, b"a" * 160)
        assert jb.put(50_000, 9, 2, b"b" * 160) == core.JB_RESYNC
        assert jb.put(50_000 + 8000 * 10, 10, 2, b"c" * 160) == core.JB_RESYNC
        assert jb.resyncs == 2
        assert jb.pop() is None and jb.pop() == b"c" * 160

    def test_far_future_packet_is_dropped(self) -> None:
        jb = core.JitterBuffer(160, target=1)
        jb.put(0, 0, 1, b"a" * 160)
        assert jb.put(160 * 70, 70, 1, b"b" * 160) == core.JB_TOO_EARLY
        assert jb.put(160, 1, 1, b"c" * 160) == core.JB_OK

    @pytest.mark.parametrize("offset", [80, -80])
    def test_a_stream_moved_off_the_playout_grid_resyncs(self, offset: int) -> None:
        """A phone back from hold whose timestamps moved by half a frame: no packet would
        ever be due again (permanent concealment); three in a row and the buffer follows."""
        jb = core.JitterBuffer(160, target=1)
        for k in range(3):
            jb.put(160 * k, k, 1, b"a" * 160)
            jb.pop()
        base = 160 * 10 + offset
        assert [jb.put(base + 160 * k, 10 + k, 1, b"b" * 160) for k in range(3)] == \
            [core.JB_TOO_EARLY, core.JB_TOO_EARLY, core.JB_RESYNC]
        jb.put(base + 160 * 3, 13, 1, b"b" * 160)
        assert jb.pop() is None and jb.pop() == b"b" * 160

    def test_a_jump_the_stream_keeps_resyncs(self) -> None:
        """A phone back from hold with its clock run on 1.5 s (under the 2 s of a restart,
        beyond the buffer): two packets dropped, the third follows the stream, which plays
        again instead of staying ahead of the buffer for the rest of the call."""
        jb = core.JitterBuffer(160, target=1)
        jb.put(0, 0, 1, b"a" * 160)
        jump = 12000
        assert [jb.put(jump + 160 * k, 1 + k, 1, b"b" * 160) for k in range(3)] == \
            [core.JB_TOO_EARLY, core.JB_TOO_EARLY, core.JB_RESYNC]
        jb.put(jump + 160 * 3, 4, 1, b"b" * 160)
        assert jb.pop() is None and jb.pop() == b"b" * 160


def test_capture_processor_hook_is_the_identity_and_reaches_the_stream():
    import socket

    from firmware._rtpcore import MediaStream
    from firmware.core._processor import CaptureProcessor

    proc = CaptureProcessor()
    frame = bytes(range(256)) + bytes(64)
    proc.playback(frame, queued=160)
    assert proc.capture(frame, queued=0) == frame
    assert proc.capture(b"") == b""
    a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stream = MediaStream(a.fileno(), b.fileno(), processor=proc)
        assert stream.processor is proc
        assert MediaStream(a.fileno(), b.fileno()).processor is None
    finally:
        a.close()
        b.close()
