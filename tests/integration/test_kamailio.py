"""Kamailio (pbx/kamailio/kamailio.cfg) as the box's registrar and proxy in front of a real
Asterisk 22: the box registers with Kamailio on 127.0.0.3 (its ``sip.server``), Asterisk on
127.0.0.1 reaches it only through Kamailio (``DOOR`` in the dial plan), and the box's calls go
through Kamailio to Asterisk. Audio both ways judged by FFT; the trust rule holds with
Kamailio as the registrar: Asterisk's own address, or a stranger, going around the proxy is
not trusted, and the proxy lets only Asterisk ring the door."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.asterisk import Asterisk
from devtools.kamailio import Kamailio
from devtools.loopback import free_port
from devtools.waiting import wait_for

from ..audio import pcm_array, peak_hz, wav_array
from .alsa_env import reset_speaker, speaker_pcm, write_mic_tone

pytestmark = pytest.mark.integration


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[Kamailio]:
    proxy = Kamailio(free_port(), tmp=tmp_path / "kamailio")
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def asterisk(request: pytest.FixtureRequest, kamailio: Kamailio) -> Iterator[Asterisk]:
    """Asterisk dialling the door through ``kamailio`` (which relays to Asterisk's port)."""
    pbx = Asterisk(port=kamailio.asterisk[1], door_via=f"{kamailio.address}:{kamailio.port}")
    try:
        pbx.start()
        kamailio.start()
        yield pbx
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(pbx.log_text()[-3000:], kamailio.log_text()[-3000:])
        pbx.cleanup()


def through_kamailio(kamailio: Kamailio) -> dict:
    return {"server": kamailio.address, "port": kamailio.port}


def test_a_phone_on_asterisk_calls_the_box_through_kamailio(asterisk, kamailio, box, baresip,
                                                            tmp_path: Path) -> None:
    write_mic_tone(700)
    reset_speaker()
    rec = tmp_path / "rec"
    rec.mkdir()
    phone = baresip("5001", tone_hz=1000, record_dir=rec)
    b = box(sip=through_kamailio(kamailio))
    st = b.wait_state("idle")
    assert st["registered"] and st["server"] == f"{kamailio.address}:{kamailio.port}"
    assert not asterisk.registered("5002"), "the box registered with Kamailio, not Asterisk"
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    b.wait_state("ringing")
    b.press("answer")
    phone.wait_event("CALL_ESTABLISHED", 10)
    b.wait_state("in_call")
    time.sleep(3)
    phone.command("hangup")  # Asterisk's BYE follows the record-route through Kamailio
    phone.wait_event("CALL_CLOSED", 10)
    st = b.wait_state("idle")
    assert st["last_call_end"] == "remote hangup"
    assert st["counters"].get("untrusted_dropped", 0) == 0, "every request came from Kamailio"
    heard = pcm_array(speaker_pcm())
    assert len(heard) > 8000 * 2
    assert abs(peak_hz(heard[8000:]) - 1000) < 15, "the speaker played the phone's 1000 Hz"
    dec = max(rec.glob("*dec.wav"), key=lambda p: p.stat().st_size)
    y, rate = wav_array(dec)
    assert abs(peak_hz(y[rate:], rate) - 700) < 15, "the phone heard the door's microphone"


def test_the_box_calls_reception_through_kamailio(asterisk, kamailio, box, baresip,
                                                  tmp_path: Path) -> None:
    write_mic_tone(600)
    reset_speaker()
    rec = tmp_path / "rec"
    rec.mkdir()
    phone = baresip("5001", answer="auto", tone_hz=1200, record_dir=rec)
    b = box(sip=through_kamailio(kamailio))
    b.wait_state("idle")
    b.press("call")  # INVITE to Kamailio, relayed to Asterisk, which challenges the box
    phone.wait_event("CALL_ESTABLISHED", 15)
    b.wait_state("in_call")
    time.sleep(3)
    b.press("hangup")  # the box's BYE: through Kamailio, to Asterisk (allowed in-dialog)
    phone.wait_event("CALL_CLOSED", 10)
    assert b.wait_state("idle")["last_call_end"] == "local hangup"
    heard = pcm_array(speaker_pcm())
    assert abs(peak_hz(heard[8000:]) - 1200) < 15
    y, rate = wav_array(max(rec.glob("*dec.wav"), key=lambda p: p.stat().st_size))
    assert abs(peak_hz(y[rate:], rate) - 600) < 15


def invite(target: str, to_port: int, src: socket.socket) -> bytes:
    host, port = src.getsockname()
    body = (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
    return (f"INVITE sip:5002@{target}:{to_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:5001@127.0.0.1>;tag=evil\r\n"
            f"To: <sip:5002@{target}>\r\nCall-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:5001@{host}:{port}>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def replies(sock: socket.socket, wait: float) -> list[bytes]:
    out, end = [], time.monotonic() + wait
    sock.settimeout(0.2)
    while time.monotonic() < end:
        try:
            out.append(sock.recv(65535))
        except TimeoutError:
            pass
    return out


def test_only_the_registrar_rings_the_box_and_only_asterisk_rings_it_through_kamailio(
        asterisk, kamailio, box) -> None:
    b = box(sip=through_kamailio(kamailio), calls={"auto_answer": True})
    b.wait_state("idle")
    box_port = b.app.cfg.sip.local_port
    # Asterisk's address (127.0.0.1) is no longer the box's registrar: straight at the box, an
    # INVITE from it is dropped and counted, as any stranger's
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(invite("127.0.0.1", box_port, s), ("127.0.0.1", box_port))
        assert replies(s, 1.0) == []
    st = wait_for(lambda: (s := b.status())["counters"].get("untrusted_dropped") and s, 5, 0.05,
                  "the dropped INVITE to be counted")
    assert st["counters"]["untrusted_dropped"] == 1 and st["state"] == "idle"
    # through the proxy, from anyone but Asterisk: Kamailio refuses it; the box never sees it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        s.sendto(invite(kamailio.address, kamailio.port, s), (kamailio.address, kamailio.port))
        got = replies(s, 1.0)
    assert any(r.startswith(b"SIP/2.0 403 Only the PBX may call the door") for r in got), got
    # nor may anyone but Asterisk send the box an in-dialog request through the proxy (a BYE
    # along the proxy's record-route, at the box's contact)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        host, port = s.getsockname()
        s.sendto((f"BYE sip:5002@127.0.0.1:{box_port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                  f"Route: <sip:{kamailio.address}:{kamailio.port};lr>\r\n"
                  "Max-Forwards: 70\r\nFrom: <sip:5001@127.0.0.1>;tag=evil\r\n"
                  "To: <sip:5002@127.0.0.1>;tag=box\r\nCall-ID: forged\r\n"
                  "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode(),
                 (kamailio.address, kamailio.port))
        got = replies(s, 1.0)
    assert any(r.startswith(b"SIP/2.0 403 Only the PBX may change") for r in got), got
    st = b.status()
    assert st["state"] == "idle" and st["counters"]["untrusted_dropped"] == 1
    assert st["registered"] and not b.pin("relay").state
