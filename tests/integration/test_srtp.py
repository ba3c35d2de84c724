"""SRTP on the wire: two media streams through a capturing relay, and calls through a real
Asterisk 22 with ``media_encryption=sdes`` to a real baresip (its own SRTP, libre's, not
libsrtp).

Audio is judged by its content: each side's recording has the other side's tone (FFT peak),
while the packets captured on the wire, decoded as the G.711 they would be in clear, carry no
trace of either tone (the energy around the tone is far below the rest of the spectrum, where
clear G.711 shows it 15 dB above). A plain-RTP control run through the same analysis shows the
tone, so the check can fail. Tampered, replayed, garbage and stranger packets are counted drops.
"""

from __future__ import annotations

import os
import re
import select
import socket
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from devtools.asterisk import Asterisk
from devtools.waiting import wait_for
from firmware import _rtpcore as core
from firmware.events import MediaParams, SrtpParams
from firmware.media.audio import ToneSource
from firmware.media.stream import RtpPorts, RtpSession, StreamSettings

from ..audio import Recorder, baresip_heard, pcm_array, peak_hz, tone_snr_db, wav_array

pytestmark = pytest.mark.integration
SUITE_80, SUITE_32 = "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"


# ------------------------------------------------------------------ judging the wire
def clear_audio_snr(payloads: list[bytes], hz: float, law: int = 0) -> float:
    """Decode RTP payloads as the G.711 they would be in clear; the tone's SNR in dB."""
    decode = core.decode_alaw if law else core.decode_ulaw
    pcm = b"".join(decode(p[12:12 + 160]) for p in payloads if len(p) >= 172)
    return tone_snr_db(pcm_array(pcm), hz)


def rtp_media(packets: list[bytes]) -> list[bytes]:
    """The RTP audio packets (PCMU/PCMA) among captured datagrams."""
    return [p for p in packets if len(p) >= 172 and p[0] >> 6 == 2 and p[1] & 0x7F in (0, 8)]


class CapturingRelay:
    """RTP and RTCP between two sessions through this relay, every datagram recorded.

    Session A sends to ``a_port`` (RTCP +1), session B to ``b_port``; ``mangle(kind, direction,
    index, data)`` returns the datagrams to forward instead of ``data`` (drop, tamper, replay).
    """

    def __init__(self, mangle: Callable[[str, str, int, bytes], list[bytes]] | None = None
                 ) -> None:
        self.side_a, self.side_b = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
        self.a_port, self.b_port = self.side_a.port, self.side_b.port
        self.dest_a: tuple[str, int] | None = None
        self.dest_b: tuple[str, int] | None = None
        self.mangle = mangle or (lambda kind, direction, index, data: [data])
        self.seen: dict[tuple[str, str], list[bytes]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def connect(self, a_port: int, b_port: int) -> CapturingRelay:
        self.dest_a, self.dest_b = ("127.0.0.1", a_port), ("127.0.0.1", b_port)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self.dest_a is not None and self.dest_b is not None
        routes = {  # incoming socket -> (kind, direction, outgoing socket, destination)
            self.side_a.rtp: ("rtp", "a>b", self.side_b.rtp, self.dest_b),
            self.side_a.rtcp: ("rtcp", "a>b", self.side_b.rtcp,
                               (self.dest_b[0], self.dest_b[1] + 1)),
            self.side_b.rtp: ("rtp", "b>a", self.side_a.rtp, self.dest_a),
            self.side_b.rtcp: ("rtcp", "b>a", self.side_a.rtcp,
                               (self.dest_a[0], self.dest_a[1] + 1)),
        }
        while not self._stop.is_set():
            ready, _, _ = select.select(list(routes), [], [], 0.05)
            for s in ready:
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    continue
                kind, direction, out, dest = routes[s]
                seen = self.seen[(kind, direction)]
                seen.append(data)
                for pkt in self.mangle(kind, direction, len(seen) - 1, data):
                    out.sendto(pkt, dest)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self.side_a.close()
        self.side_b.close()


def media(port: int, srtp: SrtpParams | None) -> MediaParams:
    return MediaParams("127.0.0.1", port, 0, "PCMU", 101, 20, "sendrecv", srtp)


def run_pair(suite: str | None, relay: CapturingRelay, seconds: float = 4.0,
             during: Callable[[RtpSession, RtpSession], None] | None = None,
             latch_b: bool = False):
    ka, kb = os.urandom(30), os.urandom(30)
    pa, pb = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    ra, rb = Recorder(), Recorder()
    a = RtpSession(pa, ToneSource(700), ra)
    b = RtpSession(pb, ToneSource(1300), rb, StreamSettings(latch=latch_b))
    relay.connect(pa.port, pb.port)
    try:
        a.start(media(relay.a_port, SrtpParams(suite, ka, kb) if suite else None))
        b.start(media(relay.b_port, SrtpParams(suite, kb, ka) if suite else None))
        time.sleep(1.0)
        a.send_dtmf("*1")
        b.send_dtmf("#")
        if during is not None:
            during(a, b)
        time.sleep(seconds - 1.0)
        assert a.running and b.running, "both loops still run"
        digits = (a.received_digits(), b.received_digits())
    finally:
        a.stop()
        b.stop()
        time.sleep(0.1)  # the RTCP BYEs cross the relay
        relay.stop()
        pa.close()
        pb.close()
    return a, b, ra, rb, digits


@pytest.mark.parametrize("suite", [None, SUITE_80, SUITE_32])
def test_srtp_streams_carry_tones_dtmf_and_srtcp_with_nothing_clear_on_the_wire(
        suite: str | None) -> None:
    relay = CapturingRelay()
    a, b, ra, rb, digits = run_pair(suite, relay)
    assert digits == ("#", "*1")
    for rec, hz in ((ra, 1300), (rb, 700)):
        x = pcm_array(bytes(rec.pcm))[4000:]
        assert abs(peak_hz(x) - hz) < 10, "each side hears the other's tone"
        assert tone_snr_db(x, hz) > 10
    sa, sb = a.final_stats, b.final_stats
    for s in (sa, sb):
        assert s["auth_failures"] == s["replays"] == s["unprotect_errors"] == 0
        assert s["rtcp_refused"] == 0
        assert s["protect_errors"] == 0 and s["malformed"] == 0 and s["lost"] == 0
        assert s["rtcp_received"] >= 1, "SR/SDES crossed (and, with SRTP, authenticated)"
    assert sa["dtmf_received"] == 1 and sb["dtmf_received"] == 2
    wire = rtp_media(relay.seen[("rtp", "a>b")])
    back = rtp_media(relay.seen[("rtp", "b>a")])
    assert len(wire) > 120 and len(back) > 120
    rtcp = relay.seen[("rtcp", "a>b")]
    assert rtcp, "RTCP was captured"
    if suite is None:  # the control: the same analysis sees clear audio and a clear CNAME
        assert clear_audio_snr(wire, 700) > 10 and clear_audio_snr(back, 1300) > 10
        assert all(b"intercom" in p for p in rtcp)
        return
    tag = 10 if suite == SUITE_80 else 4
    assert {len(p) for p in wire} == {172 + tag}, "G.711 plus the suite's tag"
    assert clear_audio_snr(wire, 700) < -10, "no 700 Hz tone in what crossed the wire"
    assert clear_audio_snr(back, 1300) < -10, "no 1300 Hz tone in what crossed the wire"
    payload = np.frombuffer(b"".join(p[12:172] for p in wire), dtype=np.uint8)
    assert 120 < payload.mean() < 135 and len(set(payload.tolist())) == 256, "looks random"
    assert not any(b"intercom" in p for p in rtcp), "the SDES CNAME is encrypted too"
    assert all(p[-14] & 0x80 for p in rtcp), "SRTCP: the E flag is set"


def test_tampered_replayed_garbage_and_stranger_packets_are_counted_drops() -> None:
    counts = {"tampered": 0, "replayed": 0, "garbage": 0, "rtcp": 0}

    def mangle(kind: str, direction: str, index: int, data: bytes) -> list[bytes]:
        if direction != "a>b":
            return [data]
        if kind == "rtcp":
            counts["rtcp"] += 1  # every SRTCP packet from A is forged on the way
            return [data[:-1] + bytes([data[-1] ^ 0xFF])]
        if index < 10:
            return [data]
        if index % 20 == 5 and len(data) > 100:
            counts["tampered"] += 1
            return [data[:40] + bytes([data[40] ^ 0x04]) + data[41:]]
        if index % 20 == 10:
            counts["replayed"] += 1
            return [data, data]
        if index % 50 == 17:
            counts["garbage"] += 1
            return [data, os.urandom(9)]
        if index in (60, 61, 62):  # an RFC 4733 "9" from the peer's own address, tag made up
            counts["tampered"] += 1
            seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
            event = core.rtp_pack(101, index == 60, seq + 30000, ts, ssrc,
                                  bytes([9, 0x80 | 10, 0, 160]))
            return [data, event + os.urandom(10)]
        return [data]

    strangers = 0

    def flood(a: RtpSession, b: RtpSession) -> None:
        nonlocal strangers
        assert b.ports is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            for seq in range(40):  # valid-looking RTP from an address that is not the peer
                s.sendto(core.rtp_pack(0, False, seq, seq * 160, 99, os.urandom(170)),
                         ("127.0.0.1", b.ports.port))
                strangers += 1

    relay = CapturingRelay(mangle)
    a, b, ra, rb, digits = run_pair(SUITE_80, relay, seconds=6.0, during=flood)
    sb = b.final_stats
    assert counts["tampered"] >= 10 and counts["replayed"] >= 10 and counts["garbage"] >= 4
    assert sb["auth_failures"] == counts["tampered"]
    # every forged SRTCP packet that reached B was refused; the last one (A's BYE as the pair
    # stops) may arrive after B has stopped counting
    assert 1 <= sb["rtcp_refused"] <= counts["rtcp"] and sb["rtcp_received"] == 0, (
        sb["rtcp_refused"], counts["rtcp"])
    assert sb["replays"] == counts["replayed"]
    assert sb["unprotect_errors"] == counts["garbage"]
    assert sb["wrong_source"] == strangers == 40
    assert sb["malformed"] == 0, "nothing refused reached the RTP parser"
    assert sb["ticks"] > 250, "the loop kept its pace"
    x = pcm_array(bytes(rb.pcm))[4000:]
    assert abs(peak_hz(x) - 700) < 10 and tone_snr_db(x, 700) > 10
    assert digits[1] == "*1", "the forged RFC 4733 digit never reached the box"
    assert sb["dtmf_received"] == 2 and a.final_stats["auth_failures"] == 0


# ------------------------------------------------------------------ through Asterisk 22
class LoopbackCapture:
    """Reads every IPv4 UDP datagram on ``lo`` (AF_PACKET) into (src port, dst port, payload)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.1)
        self.packets: list[tuple[int, int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if addr[2] == socket.PACKET_OUTGOING or data[9] != 17:
                continue
            ihl = (data[0] & 0x0F) * 4
            sport, dport = struct.unpack_from("!HH", data, ihl)
            self.packets.append((sport, dport, data[ihl + 8:]))

    def flows(self, ports: set[int]) -> dict[tuple[int, int], list[bytes]]:
        """RTP audio per (src, dst) port pair, for flows touching one of ``ports``."""
        out: dict[tuple[int, int], list[bytes]] = defaultdict(list)
        for sport, dport, payload in self.packets:
            if sport in ports or dport in ports:
                out[(sport, dport)].append(payload)
        return {k: v for k, v in ((k, rtp_media(v)) for k, v in out.items()) if len(v) > 50}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def asterisk(request: pytest.FixtureRequest) -> Iterator[Asterisk]:
    """This module's Asterisk: SDES on every endpoint unless parametrized with "plain";
    "sdes32" makes it offer the 32-bit tag suite (srtp_tag_32)."""
    mode = getattr(request, "param", "sdes")
    pbx = Asterisk(rtp_base=34000, media_encryption=None if mode == "plain" else "sdes")
    if mode == "sdes32":
        conf = pbx.dir / "etc" / "pjsip.conf"
        conf.write_text(conf.read_text().replace("media_encryption=sdes\n",
                                                 "media_encryption=sdes\nsrtp_tag_32=yes\n", 1))
    try:
        yield pbx.start()
    finally:
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(pbx.log_text()[-4000:])
        pbx.cleanup()


def test_call_through_asterisk_sdes_both_legs_tones_cross_and_the_wire_is_opaque(
        asterisk, intercom, baresip, tmp_path) -> None:
    """Box (libsrtp) -> Asterisk (sdes) -> baresip (srtp-mand, libre's SRTP): 700 Hz one way,
    1000 Hz the other, both heard; the four RTP flows on the wire carry neither tone."""
    record = tmp_path / "baresip-rec"
    record.mkdir()
    phone = baresip("5001", answer="auto", tone_hz=1000, record_dir=record,
                    mediaenc="srtp-mand")
    heard = tmp_path / "box-heard.wav"
    box = intercom(audio={"capture": "tone:700", "playback": f"wav:{heard}"},
                   media={"srtp": "required"})
    box.wait_state("idle")
    capture = LoopbackCapture()
    try:
        assert box.cmd("call", "5001")["ok"]
        phone.wait_event("CALL_ESTABLISHED", 15)
        st = box.wait_state("in_call")
        time.sleep(7)
        st = box.status()
        assert box.cmd("hangup")["ok"]
        phone.wait_event("CALL_CLOSED", 10)
        box.wait_state("idle")
    finally:
        capture.stop()
    assert st["media"]["srtp"] == SUITE_80, st["media"]
    rtp = st["rtp"]
    assert rtp["received"] > 100 and rtp["sent"] > 100 and rtp["auth_failures"] == 0
    assert rtp["rtcp_received"] >= 1, "Asterisk's SRTCP (every 5 s) authenticated"
    x, rate = wav_array(heard)
    assert abs(peak_hz(x[rate:], rate) - 1000) < 15, "the box heard baresip's 1000 Hz"
    y, yrate = baresip_heard(record)
    assert abs(peak_hz(y[yrate:], yrate) - 700) < 15, "baresip heard the box's 700 Hz"
    # the wire: the box's RTP port (from its offer) and baresip's RTP port range
    offer = re.search(r"m=audio (\d+) RTP/SAVP", box.log())
    assert offer, "the box offered RTP/SAVP"
    ports = {int(offer.group(1))} | set(range(*phone.rtp_ports))
    flows = capture.flows(ports)
    assert len(flows) >= 4, f"both directions of both legs captured: {list(flows)}"
    for flow, packets in flows.items():
        for hz in (700, 1000):
            assert clear_audio_snr(packets, hz) < -10, f"{hz} Hz audible in flow {flow}"
        assert {len(p) for p in packets} == {182}, "G.711 + an 80-bit tag"
    log = box.log()
    assert "inline:<redacted>" in log, "the SDP was logged, its keys redacted"
    assert not re.search(r"inline:(?!<redacted>)", log), "no SRTP key in the log"
    assert "inline" not in str(box.status())


@pytest.mark.parametrize("asterisk,suite", [("sdes", SUITE_80), ("sdes32", SUITE_32)],
                         indirect=["asterisk"])
def test_optional_box_accepts_an_sdes_call_from_asterisk(asterisk, intercom, baresip,
                                                         suite) -> None:
    phone = baresip("5001", mediaenc="srtp-mand")
    box = intercom(media={"srtp": "optional"}, calls={"auto_answer": True})
    box.wait_state("idle")
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    phone.wait_event("CALL_ESTABLISHED", 15)
    box.wait_state("in_call")
    # Asterisk sends RTCP every 5 s. Under _32 it tags SRTCP with 32 bits (as libre does);
    # RFC 3711 §5.2 and RFC 4568 §6.2 keep SRTCP at 80 bits, which the box sends and expects,
    # so there its SRTCP is refused and counted apart (rtcp_refused); the audio is not affected.
    st = wait_for(lambda: (s := box.status())["rtp"]["rtcp_received"]
                  + s["rtp"]["rtcp_refused"] >= 1 and s, 12, 0.2, "RTCP from Asterisk")
    assert st["media"]["srtp"] == suite and st["rtp"]["received"] > 100
    assert st["rtp"]["auth_failures"] == st["rtp"]["replays"] == 0, "every RTP packet passed"
    assert st["rtp"]["malformed"] == 0
    if suite == SUITE_80:
        assert st["rtp"]["rtcp_received"] >= 1 and st["rtp"]["rtcp_refused"] == 0
    phone.command("hangup")
    box.wait_state("idle")


@pytest.mark.parametrize("asterisk", ["plain"], indirect=True)
def test_required_box_refuses_plain_calls_both_ways(asterisk, intercom, baresip) -> None:
    phone = baresip("5001")
    box = intercom(media={"srtp": "required"}, calls={"auto_answer": True})
    box.wait_state("idle")
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    phone.wait_event("CALL_CLOSED", 15)
    st = box.status()
    assert st["state"] == "idle" and st["rtp"] is None, "never rang, never answered"
    assert "SIP/2.0 488 Not Acceptable Here" in box.log()
    assert "SRTP is required (media.srtp)" in box.log()
    assert box.cmd("call", "5001")["ok"]
    st = wait_for(lambda: (s := box.status())["last_call_end"] and s["state"] == "idle" and s,
                  15, 0.2, "the outgoing call to fail")
    # Asterisk declines the RTP/SAVP offer on its plain endpoint: the call ends, named
    assert st["last_call_end"] == "488 Not Acceptable Here", st["last_call_end"]


def test_latching_follows_only_packets_that_authenticate() -> None:
    """With media.latch on, a forged packet from another address must not steal the audio."""
    stolen: list[bytes] = []
    forged = 0

    def steal(a: RtpSession, b: RtpSession) -> None:
        nonlocal forged
        assert b.ports is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.05)
            for seq in range(40):  # SRTP-shaped: a header, a payload and a made-up tag
                s.sendto(core.rtp_pack(0, False, seq, seq * 160, 99, os.urandom(170)),
                         ("127.0.0.1", b.ports.port))
                forged += 1
                try:
                    stolen.append(s.recv(2048))
                except TimeoutError:
                    pass

    relay = CapturingRelay()
    a, b, ra, rb, _ = run_pair(SUITE_80, relay, seconds=4.0, during=steal, latch_b=True)
    assert stolen == [], "the box kept sending to its authenticated peer"
    # refused by its tag, or (once the peer was heard from its SDP address, which settles
    # latching) by its address before any crypto
    assert b.final_stats["auth_failures"] + b.final_stats["wrong_source"] == forged == 40
    x = pcm_array(bytes(ra.pcm))[-8000:]  # the last second: still hearing B
    assert abs(peak_hz(x) - 1300) < 10 and tone_snr_db(x, 1300) > 10


def test_reinvite_rekeys_and_switches_protection_mid_call() -> None:
    """A re-INVITE may bring a new key (only that side is replaced) or switch SRTP on: the
    audio continues either way, judged on the last second of each phase."""
    relay = CapturingRelay()
    pa, pb = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    ra, rb = Recorder(), Recorder()
    a, b = RtpSession(pa, ToneSource(700), ra), RtpSession(pb, ToneSource(1300), rb)
    relay.connect(pa.port, pb.port)
    ka, kb, kb2 = os.urandom(30), os.urandom(30), os.urandom(30)

    def heard(rec: Recorder, hz: float) -> bool:
        x = pcm_array(bytes(rec.pcm))[-8000:]
        return abs(peak_hz(x) - hz) < 10 and tone_snr_db(x, hz) > 10

    try:
        a.start(media(relay.a_port, None))
        b.start(media(relay.b_port, None))
        time.sleep(1.5)
        assert heard(ra, 1300) and heard(rb, 700)
        first_stream = a.stream
        a.update(media(relay.a_port, SrtpParams(SUITE_80, ka, kb)))  # plain -> SRTP
        b.update(media(relay.b_port, SrtpParams(SUITE_80, kb, ka)))
        assert a.stream is not first_stream and a.transform is not None
        time.sleep(1.5)
        assert heard(ra, 1300) and heard(rb, 700)
        assert len(relay.seen[("rtp", "a>b")][-1]) == 182, "now SRTP on the wire"
        transform = a.transform
        a.update(media(relay.a_port, SrtpParams(SUITE_80, ka, kb2)))  # B's new key
        b.update(media(relay.b_port, SrtpParams(SUITE_80, kb2, ka)))
        assert a.transform is transform, "re-keyed in place, not restarted"
        time.sleep(1.5)
        assert heard(ra, 1300) and heard(rb, 700)
        mid = a.stats()
    finally:
        a.stop()
        b.stop()
        relay.stop()
        pa.close()
        pb.close()
    assert mid["auth_failures"] <= 5, "only packets in flight during the switch"
    assert b.final_stats["auth_failures"] == 0, "A's outbound key never changed"
