"""SIP over TLS against a real Asterisk 22 with a test CA made here by openssl: the call flows
over TLS with SRTP required (the box's default over TLS; Asterisk with media_encryption=sdes and
baresip with its own SRTP as the reception phone; tones judged by FFT), a certificate that does
not verify is one clear error retried with backoff and never a fallback to clear text, and a
dropped connection re-registers."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest

from devtools.asterisk import Asterisk
from devtools.baresip import Baresip
from devtools.box.process import Intercom
from devtools.certificate import make_ca, make_server_cert
from devtools.loopback import free_port
from devtools.waiting import wait_for

from ..audio import baresip_heard, peak_hz, wav_array

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca(root / "ca", "Intercom Test CA")
    wrong = make_ca(root / "wrong", "Some Other CA")
    cert, key = make_server_cert(root / "ca", ca, "IP:127.0.0.1,DNS:localhost")
    return {"ca": ca[0], "wrong_ca": wrong[0], "cert": cert, "key": key}


@pytest.fixture
def pbx(pki: dict[str, Path]):
    ast = Asterisk(sip_tls=(pki["cert"], pki["key"]), media_encryption="sdes")
    try:
        yield ast.start()
    finally:
        ast.cleanup()


@pytest.fixture
def boxes(tmp_path: Path):
    started: list[Intercom] = []

    def make(port: int, **sip) -> Intercom:  # noqa: ANN003
        box = Intercom(tmp_path / f"box{len(started)}", port, transport="tls", **sip)
        started.append(box)
        return box.start()

    yield make
    for box in started:
        box.stop()


@pytest.fixture
def phones(tmp_path: Path):
    started: list[Baresip] = []

    def make(pbx: Asterisk, **kw) -> Baresip:  # noqa: ANN003
        phone = Baresip(pbx, "5001", tmp=tmp_path / f"baresip{len(started)}",
                        mediaenc="srtp-mand", **kw)
        started.append(phone)
        return phone.start()

    yield make
    for phone in started:
        phone.stop()


def test_call_flows_over_tls_carry_a_tone_each_way(pbx, pki, boxes, phones, tmp_path) -> None:
    record = tmp_path / "rec"
    record.mkdir()
    heard = tmp_path / "box-heard.wav"
    phone = phones(pbx, tone_hz=1000, record_dir=record)
    box = boxes(pbx.sip_tls_port, tls={"ca_file": str(pki["ca"])},
                audio={"capture": "tone:700", "playback": f"wav:{heard}"})
    st = box.wait_state("idle")
    assert st["transport"] == "tls" and st["last_error"] is None
    assert re.search(r"5002/sip:5002@\S+;transport=tls", pbx.contacts(), re.I), pbx.contacts()
    # reception calls the door (Asterisk -> box over TLS), the box answers
    phone.command("dial", f"sip:5002@127.0.0.1:{pbx.port}")
    box.wait_state("ringing")
    assert box.cmd("answer")["ok"]
    phone.wait_event("CALL_ESTABLISHED", 10)
    box.wait_state("in_call")
    time.sleep(4)
    st = box.status()
    rtp = st["rtp"]
    assert st["media"]["srtp"] == "AES_CM_128_HMAC_SHA1_80", st["media"]  # required over TLS
    phone.command("hangup")
    assert box.wait_state("idle")["last_call_end"] == "remote hangup"
    x, rate = wav_array(heard)
    assert abs(peak_hz(x[rate:], rate) - 1000) < 15, "the box heard the phone's 1000 Hz"
    y, yrate = baresip_heard(record)
    assert abs(peak_hz(y[yrate:], yrate) - 700) < 15, "the phone heard the box's 700 Hz"
    assert rtp["received"] > 100 and rtp["sent"] > 100
    # the door calls reception and hangs up itself
    assert box.cmd("call", "5001")["ok"]
    phone.wait_event("CALL_INCOMING", 10)
    phone.command("accept")
    phone.wait_event("CALL_ESTABLISHED", 10)
    box.wait_state("in_call")
    assert box.cmd("hangup")["ok"]
    phone.wait_event("CALL_CLOSED", 10)
    assert box.wait_state("idle")["last_call_end"] == "local hangup"
    log = box.log()
    assert "Via: SIP/2.0/TLS" in log and "SIP/2.0/UDP" not in log.split("recv from")[0]


def test_wrong_ca_is_one_clear_error_retried_never_registered(pbx, pki, boxes) -> None:
    box = boxes(pbx.sip_tls_port, tls={"ca_file": str(pki["wrong_ca"])}, retry_min=1, retry_max=2)
    st = wait_for(lambda: (s := box.status()).get("last_error") and s, 10, 0.1, "an error")
    assert "TLS certificate of 127.0.0.1:" in st["last_error"], st["last_error"]
    assert "does not verify" in st["last_error"] and "sip.tls.ca_file" in st["last_error"]
    assert st["registered"] is False and st["state"] == "offline"
    time.sleep(6)
    assert box.proc.poll() is None and not pbx.registered("5002")
    log = box.log()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "does not verify" in errors[0], "said once, not spammed"
    assert log.count("send to 127.0.0.1") >= 3, "REGISTER retried with backoff"


def test_never_falls_back_to_clear_text(pki, boxes) -> None:
    """A server that does not speak TLS: the box sends only TLS handshakes, never SIP."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", free_port(socket.SOCK_STREAM)))
    listener.listen(8)
    listener.settimeout(0.5)
    first_bytes: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(2)
            try:
                first_bytes.append(conn.recv(4096))
                conn.sendall(b"SIP/2.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        box = boxes(listener.getsockname()[1], tls={"ca_file": str(pki["ca"])}, retry_min=1,
                    retry_max=2)
        st = wait_for(lambda: (s := box.status()).get("last_error") and s, 10, 0.1, "an error")
        assert "TLS" in st["last_error"]
        time.sleep(4)
    finally:
        stop.set()
        thread.join(3)
        listener.close()
    assert len(first_bytes) >= 2, "it retried"
    assert all(b[:1] == b"\x16" for b in first_bytes if b), first_bytes  # TLS handshake records
    assert not any(b"REGISTER" in b or b"SIP/2.0" in b for b in first_bytes)


def test_reconnects_and_registers_again_when_the_pbx_restarts(pbx, pki, boxes) -> None:
    # long registration backoff: only the reconnect itself can bring the box back quickly
    box = boxes(pbx.sip_tls_port, tls={"ca_file": str(pki["ca"])}, retry_min=40, retry_max=60)
    box.wait_state("idle")
    wait_for(lambda: pbx.registered("5002"), 10, 0.1, "registered over TLS")
    pbx.stop()
    st = box.wait_state("offline", 5)
    assert "connection to the registrar lost" in st["last_error"]
    pbx.start()
    # the reconnect retries 50-100 % of 0.5, 1, 2, 4... s apart, each attempt bounded at 15 s: an
    # Asterisk slow to start on a busy host (a handshake that hangs meanwhile) can take two attempts
    box.wait_state("idle", 60)
    wait_for(lambda: pbx.registered("5002"), 10, 0.1, "registered again over TLS")
    assert re.search(r"5002/sip:5002@\S+;transport=tls", pbx.contacts(), re.I)


def test_verify_false_registers_with_a_loud_warning(pbx, pki, boxes) -> None:
    box = boxes(pbx.sip_tls_port, tls={"ca_file": str(pki["wrong_ca"]), "verify": False})
    box.wait_state("idle")
    assert "certificate is NOT checked" in box.log()
