"""A tone source and a null sink inside the Cython loop: a call with them runs on the loop
thread alone (no Python audio pump), over real UDP sockets on loopback, and what goes on the
wire is still the tone (by FFT, and sample for sample through G.711), both ways, with DTMF."""

from __future__ import annotations

import dataclasses
import select
import socket
import threading
import time

import numpy as np
import pytest

from firmware import _rtpcore as core
from firmware.events import MediaParams, SrtpParams
from firmware.media.audio import NullSink, ToneSource
from firmware.media.stream import RtpPorts, RtpSession

from ..audio import pcm_array, peak_hz, tone_snr_db

pytestmark = pytest.mark.integration
SUITE = "AES_CM_128_HMAC_SHA1_80"


def params(port: int) -> MediaParams:
    return MediaParams("127.0.0.1", port, 0, "PCMU", 101, 20, "sendrecv")


class Tap:
    """A loopback relay that keeps every RTP datagram it forwards: packets sent to ``port_a``
    reach ``a_peer`` from ``port_b`` and the other way round (so symmetric RTP holds)."""

    def __init__(self, a: int, b: int) -> None:
        self.peer = {"a": ("127.0.0.1", a), "b": ("127.0.0.1", b)}
        self.sock = {k: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for k in "ab"}
        for s in self.sock.values():
            s.bind(("127.0.0.1", 0))
        self.port_a = self.sock["a"].getsockname()[1]
        self.port_b = self.sock["b"].getsockname()[1]
        self.seen: dict[str, list[bytes]] = {"a>b": [], "b>a": []}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tap")
        self._thread.start()

    def _run(self) -> None:
        a, b = self.sock["a"], self.sock["b"]
        while not self._stop.is_set():
            for s in select.select([a, b], [], [], 0.05)[0]:
                data = s.recv(2048)
                if s is a:  # from A's side: on to B, from the socket B talks to
                    self.seen["a>b"].append(data)
                    b.sendto(data, self.peer["b"])
                else:
                    self.seen["b>a"].append(data)
                    a.sendto(data, self.peer["a"])

    def audio(self, way: str) -> np.ndarray:
        """The PCMU packets' audio that went ``way``, decoded, in wire order."""
        frames = [p for p in map(core.rtp_parse, self.seen[way]) if p[0] == 0]
        return pcm_array(b"".join(core.decode_ulaw(p[5]) for p in frames))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for s in self.sock.values():
            s.close()


def pumps() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "audio-pump"]


def test_tone_into_null_sink_runs_on_the_loop_thread_alone() -> None:
    pa, pb = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    a = RtpSession(pa, ToneSource(700), NullSink())
    b = RtpSession(pb, ToneSource(1013), NullSink())  # not a multiple of 50 Hz
    tap = Tap(pa.port, pb.port)
    try:
        a.start(params(tap.port_a))
        b.start(params(tap.port_b))
        time.sleep(1.0)
        running = pumps()
        assert a.send_dtmf("15#") == 3
        assert b.send_dtmf("*0") == 2
        time.sleep(2.0)
        got_b, got_a = b.received_digits(), a.received_digits()
    finally:
        a.stop()
        b.stop()
        tap.close()
        pa.close()
        pb.close()
    assert running == [], "no Python audio pump: the loop makes and drops the audio itself"
    assert got_b == "15#" and got_a == "*0"
    for way, hz in (("a>b", 700), ("b>a", 1013)):
        x = tap.audio(way)
        assert len(x) > 8000 * 2.5, f"{way}: {len(x)} samples"
        assert abs(peak_hz(x) - hz) < 10, way
        assert tone_snr_db(x, hz) > 15, way  # the frames DTMF replaced leave seams
    for st in (a.final_stats, b.final_stats):
        assert st["received"] > 130 and st["lost"] == 0 and st["dtmf_received"] >= 2
        assert st["malformed"] == 0 and st["wrong_source"] == 0
        assert st["source_underruns"] == 0, "the loop never ran short of tone"


def test_tone_on_the_wire_is_the_tone_sample_for_sample_across_restarts() -> None:
    """The loop's table is the tone the source would have read, and each time a re-INVITE
    switches SRTP on or off (the stream stops and starts again) the new stream carries on the
    phase where the last one stopped: the plain parts of the wire are one tone, sample for
    sample through G.711, with the SRTP part's frames (one per packet) in between."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    ports = RtpPorts("127.0.0.1")
    plain = params(rx.getsockname()[1])
    srtp = dataclasses.replace(plain, srtp=SrtpParams(SUITE, bytes(range(30)), bytes(30)))
    session = RtpSession(ports, ToneSource(1013, 0.5), NullSink())
    packets: list[bytes] = []
    threads = []
    try:
        for media in (plain, srtp, plain):
            session.update(media)  # the first one starts the stream
            time.sleep(0.7)
            threads.append((session._pump_thread, pumps()))
        session.stop()
        rx.settimeout(0.3)
        while True:
            try:
                packets.append(rx.recv(2048))
            except TimeoutError:
                break
    finally:
        session.stop()
        rx.close()
        ports.close()
    assert threads == [(None, [])] * 3
    ssrcs = [int.from_bytes(p[8:12], "big") for p in packets]
    runs = [ssrcs[0]] + [b for a, b in zip(ssrcs, ssrcs[1:], strict=False) if b != a]
    assert len(runs) == 3 and len(set(runs)) == 3, "three streams, one after the other"
    first = [p for p, s in zip(packets, ssrcs, strict=True) if s == runs[0]]
    hidden = [p for p, s in zip(packets, ssrcs, strict=True) if s == runs[1]]
    last = [p for p, s in zip(packets, ssrcs, strict=True) if s == runs[2]]
    assert all(len(p) == 12 + 160 for p in first + last)
    assert all(len(p) == 12 + 160 + 10 for p in hidden), "SRTP: payload + 80-bit tag"
    n1, n2, n3 = (160 * len(x) for x in (first, hidden, last))
    assert min(n1, n2, n3) >= 0.5 * 8000
    tone = core.decode_ulaw(core.encode_ulaw(ToneSource(1013, 0.5).read(n1 + n2 + n3)))
    assert b"".join(core.decode_ulaw(p[12:]) for p in first) == tone[:2 * n1]
    assert b"".join(core.decode_ulaw(p[12:]) for p in last) == tone[2 * (n1 + n2):]
