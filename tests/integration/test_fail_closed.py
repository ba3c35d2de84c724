"""Checks that fail closed, over real UDP sockets on loopback: a media stream without a usable
peer address sends nothing and accepts nothing (no RTP, no RFC 4733 key, no latching, plain or
SRTP), a stream with a peer takes packets from that peer only (each other one a counted drop),
and the running box answers an SDP address the media core could not use with 488, before
ringing and mid-call, its call and audio untouched."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from devtools.box.process import Intercom
from devtools.loopback import free_port
from devtools.waiting import wait_for
from firmware import _rtpcore as core
from firmware.events import MediaParams, SrtpParams
from firmware.media.audio import SilenceSource, ToneSource
from firmware.media.stream import RtpPorts, RtpSession, StreamSettings

from ..audio import Recorder
from .test_trust import STRANGER_IP, dtmf_packets

pytestmark = pytest.mark.integration
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"


def _tone_packets(n: int, ssrc: int = 0xBAD, pt: int = 0) -> list[bytes]:
    loud = bytes([0x80, 0x00] * 80)  # µ-law full scale, both signs: anything but silence
    return [core.rtp_pack(pt, i == 0, 1000 + i, 160 * i, ssrc, loud) for i in range(n)]


def _spray(sock: socket.socket, port: int, packets: list[bytes]) -> None:
    for pkt in packets:
        sock.sendto(pkt, ("127.0.0.1", port))
        time.sleep(0.002)


def _stranger() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((STRANGER_IP, 0))
    return s


@pytest.mark.parametrize("latch", [False, True])
@pytest.mark.parametrize("remote", ["010.0.0.1", "pbx.example", "0.0.0.0", "::ffff:127.0.0.2"])
def test_a_stream_without_a_usable_peer_plays_and_accepts_nothing(remote: str,
                                                                   latch: bool) -> None:
    """The defect: SDP let 010.0.0.1 through, the media core could not parse it, and a stream
    with no peer then took RTP and RFC 4733 keys from any address (a stranger's *1 opened the
    door). Now: no peer, nothing in, nothing out; every datagram counted."""
    ports = RtpPorts("127.0.0.1")
    stranger = _stranger()
    heard = Recorder()
    session = RtpSession(ports, ToneSource(700), heard, StreamSettings(latch=latch))
    audio, keys = _tone_packets(40), dtmf_packets("*1")
    sr = bytes([0x80, 200, 0, 6]) + bytes(24)
    try:
        session.start(MediaParams(remote, 4000, 0, "PCMU", 101, 20, "sendrecv"))
        _spray(stranger, ports.port, keys + audio + keys)
        stranger.sendto(sr, ("127.0.0.1", ports.port + 1))
        wait_for(lambda: session.stats()["wrong_source"] >= 2 * len(keys) + len(audio) + 1, 5,
                 0.05, "every datagram counted")
        time.sleep(0.2)
        st = session.stats()
        digits = session.received_digits()
    finally:
        session.stop()
        stranger.close()
        ports.close()
    assert digits == "" and st["dtmf_received"] == 0, "no key from a stranger"
    assert st["received"] == 0 and st["rtcp_received"] == 0 and not st["has_remote"]
    assert st["wrong_source"] == 2 * len(keys) + len(audio) + 1
    assert st["sent"] == 0 and st["rtcp_sent"] == 0, "nothing sent to nowhere"
    assert len(heard.pcm) > 0 and not any(heard.pcm), "played silence, nothing of the stranger"


def test_the_media_core_itself_refuses_an_unparsable_peer() -> None:
    """MediaStream.set_remote judges with the same parser as SDP: a refused address leaves
    the stream without a peer, never with the one it had or a half-parsed one."""
    a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET,
                                                                          socket.SOCK_DGRAM)
    try:
        stream = core.MediaStream(a.fileno(), b.fileno())
        assert not stream.has_remote
        stream.set_remote("127.0.0.1", 4000)
        assert stream.has_remote
        for bad in ("010.0.0.1", "127.1", "0x7f.0.0.1", "localhost", "::1", "127.0.0.1 "):
            stream.set_remote("127.0.0.1", 4000)
            with pytest.raises(ValueError):
                stream.set_remote(bad, 4000)
            assert not stream.has_remote, bad
        stream.set_remote("0.0.0.0", 4000)  # RFC 2543 hold: no peer either
        assert not stream.has_remote
    finally:
        a.close()
        b.close()


def test_srtp_stream_without_a_peer_refuses_by_address_before_any_crypto() -> None:
    ports = RtpPorts("127.0.0.1")
    stranger = _stranger()
    keys = SrtpParams(SRTP_SUITE, os.urandom(30), os.urandom(30))
    session = RtpSession(ports, SilenceSource(), Recorder(), StreamSettings(latch=True))
    packets = _tone_packets(20) + dtmf_packets("*1")
    try:
        session.start(MediaParams("010.0.0.1", 4000, 0, "PCMU", 101, 20, "sendrecv",
                                  srtp=keys))
        _spray(stranger, ports.port, packets)
        wait_for(lambda: session.stats()["wrong_source"] >= len(packets), 5, 0.05, "drops")
        st = session.stats()
    finally:
        session.stop()
        stranger.close()
        ports.close()
    assert st["wrong_source"] == len(packets)
    assert st["auth_failures"] == 0 and st["received"] == 0 and st["dtmf_received"] == 0


def test_with_a_peer_only_the_peer_counts_and_latching_needs_one() -> None:
    """A valid SDP address: the peer's packets are taken, another source's dropped and
    counted. With latching on, the first sender is followed only because a peer was
    negotiated; after that, everyone else is a drop again."""
    ports, peer = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    stranger = _stranger()
    session = RtpSession(ports, SilenceSource(), Recorder())
    try:
        session.start(MediaParams("127.0.0.1", peer.port, 0, "PCMU", 101, 20, "sendrecv"))
        _spray(stranger, ports.port, dtmf_packets("*1") + _tone_packets(10))
        _spray(peer.rtp, ports.port, _tone_packets(10, ssrc=7))
        wait_for(lambda: session.stats()["received"] >= 10, 5, 0.05, "the peer's packets")
        time.sleep(0.1)
        st = session.stats()
        assert st["received"] == 10 and st["dtmf_received"] == 0
        assert st["wrong_source"] == len(dtmf_packets("*1")) + 10
        assert session.received_digits() == ""
    finally:
        session.stop()
    nat = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    nat.bind(("127.0.0.1", 0))
    try:
        # the peer's packets come from where SDP said: that settles it, a later stranger
        # cannot latch the stream away; from elsewhere (a NAT): followed, then settled
        for sender in (peer.rtp, nat):
            latching = RtpSession(ports, SilenceSource(), Recorder(), StreamSettings(latch=True))
            try:
                latching.start(MediaParams("127.0.0.1", peer.port, 0, "PCMU", 101, 20,
                                           "sendrecv"))
                _spray(sender, ports.port, _tone_packets(5, ssrc=7))
                wait_for(lambda s=latching: s.stats()["received"] >= 5, 5, 0.05, "the peer")
                _spray(stranger, ports.port, dtmf_packets("*1") + _tone_packets(5))
                wait_for(lambda s=latching: s.stats()["wrong_source"] >= 5 + len(
                    dtmf_packets("*1")), 5, 0.05, "the stranger's drops")
                st = latching.stats()
                assert latching.received_digits() == "" and st["dtmf_received"] == 0
                assert st["received"] == 5
            finally:
                latching.stop()
    finally:
        nat.close()
        stranger.close()
        ports.close()
        peer.close()


# ----------------------------------------------------------------------------- the whole box
class Pbx:
    """The box's registrar as far as the box can tell (its address, 127.0.0.1): a UDP socket
    the test writes SIP with."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.call_id = uuid.uuid4().hex
        self.cseq = 1
        self.to_tag = ""
        self.branch = ""
        self.last_status = 0

    def request(self, method: str, box_port: int, body: bytes = b"") -> list[str]:
        self.cseq += method != "ACK"
        if method != "ACK" or self.last_status < 300:  # a non-2xx ACK is the INVITE's hop
            self.branch = f"z9hG4bK{uuid.uuid4().hex}"
        head = [f"{method} sip:5002@127.0.0.1:{box_port} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={self.branch}",
                "Max-Forwards: 70", "From: <sip:5001@127.0.0.1>;tag=pbx",
                f"To: <sip:5002@127.0.0.1>{f';tag={self.to_tag}' if self.to_tag else ''}",
                f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} {method}",
                f"Contact: <sip:5001@127.0.0.1:{self.port}>"]
        if body:
            head.append("Content-Type: application/sdp")
        head.append(f"Content-Length: {len(body)}")
        self.sock.sendto(("\r\n".join(head) + "\r\n\r\n").encode() + body,
                         ("127.0.0.1", box_port))
        if method == "ACK":
            return []
        return self._final(f"{self.cseq} {method}")

    def _final(self, cseq: str) -> list[str]:
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                lines = self.sock.recv(65535).decode(errors="replace").split("\r\n")
            except TimeoutError:
                continue
            if not lines[0].startswith("SIP/2.0 ") or lines[0].startswith("SIP/2.0 1") or \
                    f"CSeq: {cseq}" not in lines:
                continue  # provisional, a retransmission, or a request of the box's
            self.last_status = int(lines[0].split()[1])
            for line in lines:
                if line.lower().startswith(("to:", "t:")) and ";tag=" in line:
                    self.to_tag = line.split(";tag=", 1)[1].split(";")[0].strip()
            return lines
        raise AssertionError("no final response from the box")

    def close(self) -> None:
        self.sock.close()


def _offer(addr: str, port: int = 40000, version: int = 1) -> bytes:
    return (f"v=0\r\no=- 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n").encode()


@pytest.fixture
def pbx():
    p = Pbx()
    yield p
    p.close()


def test_the_box_answers_an_unusable_sdp_address_with_488(tmp_path: Path, pbx: Pbx) -> None:
    box_port = free_port()
    box = Intercom(tmp_path / "box", pbx.port, register=False, keepalive="off",
                   local_port=box_port, calls={"auto_answer": True, "door_code": "*1"})
    box.start()
    try:
        box.wait_state("idle")
        for bad in ("010.0.0.1", "10.0.0.01", "224.0.0.1"):
            pbx.call_id, pbx.to_tag = uuid.uuid4().hex, ""
            assert pbx.request("INVITE", box_port, _offer(bad))[0].startswith("SIP/2.0 488 ")
            pbx.request("ACK", box_port)
        st = box.status()
        assert st["state"] == "idle" and st["door_openings"] == 0
        assert "incoming call" not in box.log(), "refused before ringing"
        # a call with a good address, then a re-INVITE that would move it to an unusable one
        pbx.call_id, pbx.to_tag = uuid.uuid4().hex, ""
        assert pbx.request("INVITE", box_port, _offer("127.0.0.1"))[0] == "SIP/2.0 200 OK"
        pbx.request("ACK", box_port)
        st = box.wait_state("in_call")
        media = st["media"]
        assert media["remote_addr"] == "127.0.0.1" and st["rtp"]["has_remote"]
        answer = pbx.request("INVITE", box_port, _offer("010.0.0.1", 40002, 2))
        assert answer[0].startswith("SIP/2.0 488 ")
        pbx.request("ACK", box_port)
        st = box.status()
        assert st["state"] == "in_call" and st["media"] == media and st["rtp"]["has_remote"]
        assert pbx.request("BYE", box_port)[0] == "SIP/2.0 200 OK"
        assert box.wait_state("idle")["last_call_end"] == "remote hangup"
    finally:
        box.stop()
