"""Only the PBX rings the box or opens the door, over real sockets on loopback: the whole box
(in-process, pins simulated) registered with a real Asterisk on 127.0.0.1, a stranger on
127.0.0.2 sending SIP and RTP straight at it, and baresip as the reception phone."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from devtools.box.in_process import toggles
from devtools.waiting import wait_for
from firmware import _rtpcore as core

from .alsa_env import write_mic_tone

pytestmark = pytest.mark.integration
STRANGER_IP = "127.0.0.2"


class Stranger:
    """A LAN attacker with its own address: plain UDP sockets on 127.0.0.2."""

    def __init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((STRANGER_IP, 0))
        self.sip.settimeout(0.5)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((STRANGER_IP, 0))

    @property
    def port(self) -> int:
        return self.sip.getsockname()[1]

    def send(self, data: bytes, port: int) -> None:
        self.sip.sendto(data, ("127.0.0.1", port))

    def replies(self, wait: float = 1.0) -> list[bytes]:
        out, end = [], time.monotonic() + wait
        while time.monotonic() < end:
            try:
                out.append(self.sip.recv(65535))
            except TimeoutError:
                pass
        return out

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()


def sip_request(method: str, box_port: int, src_port: int, *, call_id: str | None = None,
                from_tag: str = "evil", to_tag: str = "", cseq: int = 1,
                body: bytes = b"", ctype: str = "") -> bytes:
    call_id = call_id or uuid.uuid4().hex
    head = [f"{method} sip:5002@127.0.0.1:{box_port} SIP/2.0",
            f"Via: SIP/2.0/UDP {STRANGER_IP}:{src_port};rport;branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70", f"From: <sip:5001@127.0.0.1>;tag={from_tag}",
            f"To: <sip:5002@127.0.0.1>{f';tag={to_tag}' if to_tag else ''}",
            f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
            f"Contact: <sip:5001@{STRANGER_IP}:{src_port}>"]
    if ctype:
        head.append(f"Content-Type: {ctype}")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def offer(rtp_port: int) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 {STRANGER_IP}\r\ns=-\r\nc=IN IP4 {STRANGER_IP}\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n").encode()


def dtmf_packets(digits: str, ssrc: int = 0x5EC0DE) -> list[bytes]:
    """RFC 4733 events, each with three end packets, as a forger would send them."""
    out, seq = [], 100
    for i, d in enumerate(digits):
        event, ts = core.DTMF_EVENTS.index(d), 8000 * (i + 1)
        for k, end in ((0, False), (1, False), (2, True), (3, True), (4, True)):
            payload = bytes([event, (0x80 if end else 0) | 10]) + (160 * (k + 1)).to_bytes(2, "big")
            out.append(core.rtp_pack(101, k == 0, seq, ts, ssrc, payload))
            seq += 1
    return out


@pytest.fixture
def stranger():
    s = Stranger()
    yield s
    s.close()


def test_strangers_direct_invite_never_rings_and_is_counted(asterisk, box, stranger) -> None:
    b = box(calls={"auto_answer": True})
    b.wait_state("idle")
    port = b.app.cfg.sip.local_port
    ringing_before = len(b.pin("ringing").states)
    for _ in range(5):
        stranger.send(sip_request("INVITE", port, stranger.port, body=offer(40000),
                                  ctype="application/sdp"), port)
    stranger.send(sip_request("OPTIONS", port, stranger.port), port)
    assert stranger.replies(1.5) == [], "drop policy: not a single byte back"
    st = b.status()
    assert st["state"] == "idle" and st["counters"]["untrusted_dropped"] == 6
    assert toggles(b.pin("ringing"), ringing_before) == 0 and not b.pin("relay").state
    assert b.status()["registered"], "the PBX still reaches the box"


def test_403_policy_answers_strangers_briefly(asterisk, box, stranger) -> None:
    b = box(sip={"untrusted_policy": "403"})
    b.wait_state("idle")
    port = b.app.cfg.sip.local_port
    data = sip_request("INVITE", port, stranger.port, body=offer(40000), ctype="application/sdp")
    stranger.send(data, port)
    got = stranger.replies(1.0)
    assert len(got) == 1 and got[0].startswith(b"SIP/2.0 403 ")
    assert len(got[0]) <= len(data) and b"intercom" not in got[0]
    assert b.status()["state"] == "idle" and b.status()["counters"]["untrusted_refused"] == 1


def test_stranger_in_a_pbx_call_cannot_open_the_door(asterisk, box, baresip, stranger) -> None:
    """INFO *1 and re-INVITE with the live call's IDs, and RFC 4733 *1 sprayed at the box's RTP
    port from another address: nothing opens, audio does not move; the PBX's *1 still opens."""
    write_mic_tone(700)
    phone = baresip("5001")
    b = box()
    b.wait_state("idle")
    b.answer_call_from(phone, asterisk.port)
    port = b.app.cfg.sip.local_port
    call = b.app.ua.call
    dialog = call.dialog
    media_before = b.status()["media"]
    # the IDs an attacker sniffing the LAN sees
    ids = dict(call_id=dialog.call_id, from_tag=dialog.remote_tag, to_tag=dialog.local_tag)
    cseq = (dialog.remote_cseq or 0) + 10
    stranger.send(sip_request("INFO", port, stranger.port, cseq=cseq, body=b"Signal=*\r\n",
                              ctype="application/dtmf-relay", **ids), port)
    stranger.send(sip_request("INFO", port, stranger.port, cseq=cseq + 1, body=b"Signal=1\r\n",
                              ctype="application/dtmf-relay", **ids), port)
    stranger.send(sip_request("INVITE", port, stranger.port, cseq=cseq + 2, body=offer(40000),
                              ctype="application/sdp", **ids), port)
    box_rtp = b.app.media_control.ports.port
    for pkt in dtmf_packets("*1"):
        stranger.rtp.sendto(pkt, ("127.0.0.1", box_rtp))
        time.sleep(0.005)
    time.sleep(1.5)
    st = b.status()
    assert st["state"] == "in_call" and st["media"] == media_before, "audio did not move"
    assert st["door_openings"] == 0 and not b.pin("relay").state
    assert st["dtmf_keys_received"] == 0
    assert st["counters"]["untrusted_dropped"] == 3 and st["rtp"]["wrong_source"] >= 10
    assert stranger.replies(0.2) == []
    phone.command("sndcode", "*1")
    wait_for(lambda: b.pin("relay").state, 10, 0.02, "the door relay (the PBX's *1)")
    assert b.status()["door_openings"] == 1
    b.press("hangup")
    b.wait_state("idle")


def _pbx_call(b, phone, asterisk) -> None:  # noqa: ANN001
    b.answer_call_from(phone, asterisk.port)
    time.sleep(0.5)


def test_door_code_lockout_holds_across_calls(asterisk, box, baresip) -> None:
    write_mic_tone(700)
    phone = baresip("5001")
    b = box(calls={"door_code_max_failures": 2, "door_code_lockout": 60})
    b.wait_state("idle")
    _pbx_call(b, phone, asterisk)
    phone.command("sndcode", "*2")
    wait_for(lambda: b.status()["dtmf_keys_received"] >= 2, 10, 0.1, "the keys")
    b.press("hangup")
    b.wait_state("idle")
    assert b.status()["door_lockout_until"] is None
    _pbx_call(b, phone, asterisk)
    phone.command("sndcode", "*3")
    st = wait_for(lambda: (s := b.status())["door_lockout_until"] and s, 10, 0.1, "lockout")
    assert 55 < st["door_lockout_until"] - time.time() <= 60.5
    since = len(b.pin("error").states)
    time.sleep(0.6)
    assert toggles(b.pin("error"), since) >= 4 and st["leds"]["error"] == "blinking"
    phone.command("sndcode", "*1")
    wait_for(lambda: b.status()["dtmf_keys_received"] >= 6, 10, 0.1, "the right code's keys")
    time.sleep(0.5)
    assert b.status()["door_openings"] == 0 and not b.pin("relay").state, \
        "the right code during the lockout does nothing"
    b.press("hangup")
    b.wait_state("idle")


def test_rtcp_and_dtmf_only_from_the_negotiated_peer() -> None:
    """The media core alone: RTCP and RFC 4733 from another address (or the peer's address
    but another port) are counted as wrong_source; the same packets from the peer count."""
    from firmware.events import MediaParams
    from firmware.media.audio import NullSink, SilenceSource
    from firmware.media.stream import RtpPorts, RtpSession

    ports, peer = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind((STRANGER_IP, 0))
    session = RtpSession(ports, SilenceSource(), NullSink())
    sr = bytes([0x80, 200, 0, 6]) + bytes(24)  # an RTCP sender report, no blocks
    try:
        session.start(MediaParams("127.0.0.1", peer.port, 0, "PCMU", 101, 20, "sendrecv"))
        for pkt in dtmf_packets("*1"):
            other.sendto(pkt, ("127.0.0.1", ports.port))
            peer.rtcp.sendto(pkt, ("127.0.0.1", ports.port))  # right address, wrong port
        other.sendto(sr, ("127.0.0.1", ports.port + 1))
        peer.rtp.sendto(sr, ("127.0.0.1", ports.port + 1))  # right address, wrong port
        time.sleep(0.5)
        st = session.stats()
        assert st["rtcp_received"] == 0 and st["dtmf_received"] == 0
        assert session.received_digits() == ""
        assert st["wrong_source"] == 2 * len(dtmf_packets("*1")) + 2
        peer.rtcp.sendto(sr, ("127.0.0.1", ports.port + 1))
        for pkt in dtmf_packets("*1"):
            peer.rtp.sendto(pkt, ("127.0.0.1", ports.port))
        time.sleep(0.5)
        st = session.stats()
        assert st["rtcp_received"] == 1 and session.received_digits() == "*1"
    finally:
        session.stop()
        other.close()
        ports.close()
        peer.close()
