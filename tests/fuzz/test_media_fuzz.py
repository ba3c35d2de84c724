"""The media core's receive path (RTP header, RFC 4733 events, RTCP) fuzzed over real UDP on
loopback: those parsers run inside the GIL-free loop, so the packets come from the negotiated
peer's own sockets and the loop must keep ticking with sane statistics afterwards."""

from __future__ import annotations

import os
import random
import time

from firmware import _rtpcore as core
from firmware.events import MediaParams
from firmware.media.audio import NullSink, SilenceSource
from firmware.media.stream import RtpPorts, RtpSession

from . import corpus

PACKETS = int(os.environ.get("INTERCOM_FUZZ_EXAMPLES", "150")) * 10


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(4)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            del data[pos:]
        elif op == 2:
            data[pos:pos] = rng.randbytes(rng.randrange(1, 16))
        elif data:  # keep a valid version so the deeper parsers are reached
            data[0] = 0x80 | (data[0] & 0x3F) | rng.choice([0, 0x20, 0x10, 0x0F])
    return bytes(data)


def test_rtp_rtcp_and_events_from_the_peer_never_stop_the_loop() -> None:
    rng = random.Random(4733)
    seeds = corpus.rtp_seeds() + [
        core.rtp_pack(101, False, 9, 800, 0x1234, bytes([e, f, 0, d]))
        for e, f, d in ((1, 0x8A, 160), (11, 0x0A, 80), (200, 0x80, 0), (16, 0xFF, 255))]
    rtcp = [bytes([0x80, 200, 0, 6]) + bytes(24), bytes([0x81, 201, 0, 7]) + bytes(28),
            bytes([0x81, 202, 0, 2]) + b"\x00\x00\x00\x01\x01\x02ab", bytes([0x81, 203, 0, 1])]
    ports, peer = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    session = RtpSession(ports, SilenceSource(), NullSink())
    try:
        session.start(MediaParams("127.0.0.1", peer.port, 0, "PCMU", 101, 20, "sendrecv"))
        for i in range(PACKETS):
            peer.rtp.sendto(_mutate(rng, rng.choice(seeds)), ("127.0.0.1", ports.port))
            peer.rtcp.sendto(_mutate(rng, rng.choice(rtcp)), ("127.0.0.1", ports.port + 1))
            if i % 50 == 0:
                time.sleep(0.005)  # let the loop drain its sockets
        time.sleep(0.3)
        before = session.stats()["ticks"]
        time.sleep(0.2)
        st = session.stats()
        assert session.running and st["ticks"] > before, "the loop still ticks"
        assert st["malformed"] + st["received"] + st["wrong_payload_type"] > 0
        assert all(len(d) == 1 and d in core.DTMF_EVENTS for d in session.received_digits())
    finally:
        session.stop()
        ports.close()
        peer.close()
