"""The intercom against a real Asterisk 22 and a real baresip phone, all on loopback."""

from __future__ import annotations

import re
import time

import pytest

from devtools.asterisk import PASSWORDS
from devtools.waiting import wait_for

pytestmark = pytest.mark.integration


def test_registers_with_digest_challenge_visible_in_asterisk(asterisk, intercom) -> None:
    box = intercom()
    wait_for(lambda: asterisk.registered("5002"), 10, 0.1, "5002 in pjsip show contacts")
    contacts = asterisk.contacts()
    assert re.search(rf"5002/sip:5002@127\.0\.0\.1:{box.sip_port}\s", contacts), contacts
    st = box.wait_state("idle")
    assert st["registered"] is True and st["last_error"] is None
    assert box.sock.stat().st_mode & 0o777 == 0o660, "control socket is mode 0660"
    assert PASSWORDS["5002"] not in str(st)
    log = box.log()
    assert "SIP/2.0 401 Unauthorized" in log, "Asterisk challenged the REGISTER"
    assert "Authorization: <redacted>" in log
    assert PASSWORDS["5002"] not in log, "the password never reaches the log"
    assert box.stop() == 0
    wait_for(lambda: not asterisk.registered("5002"), 5, 0.1, "un-REGISTER on shutdown")


def test_wrong_password_clear_error_backoff_no_crash(asterisk, intercom) -> None:
    box = intercom(password="not-the-password")
    st = wait_for(lambda: (s := box.status()).get("last_error") and s, 10, 0.1, "an error")
    assert st["last_error"] == (
        f"registration rejected: 401 Unauthorized from 127.0.0.1:{asterisk.port} — "
        "check sip.username / sip.password"), st["last_error"]
    assert st["registered"] is False and st["state"] == "offline"
    time.sleep(6)
    assert box.proc.poll() is None, "still running"
    registers = box.log().count(f"send to 127.0.0.1:{asterisk.port}\nREGISTER ")
    # backoff 1, 2, 4, 4 s: at most 5 attempts in ~7 s, two REGISTERs each (challenge+answer)
    assert 4 <= registers <= 10, registers
    assert box.log().count("ERROR intercom: registration rejected") == 1, "said once, not spammed"
    assert "not-the-password" not in box.log()
    assert not asterisk.registered("5002")


def test_intercom_calls_reception_and_hangs_up(asterisk, intercom, baresip) -> None:
    phone = baresip("5001", answer="auto")
    box = intercom()
    box.wait_state("idle")
    assert box.cmd("call", "5001")["ok"]
    ev = phone.wait_event("CALL_ESTABLISHED", 15)
    assert ev["peeruri"].startswith("sip:5002@")
    st = box.wait_state("in_call")
    assert st["remote"] == "5001" and st["media"]["codec"] in ("PCMU", "PCMA")
    time.sleep(1.2)
    st = box.status()
    assert st["call_duration"] >= 1.0
    assert st["rtp"]["received"] > 0, "Asterisk sends RTP to the port our SDP announced"
    assert st["rtp"]["sent"] > 0
    assert box.cmd("hangup")["ok"]
    phone.wait_event("CALL_CLOSED", 10)
    assert box.wait_state("idle")["last_call_end"] == "local hangup"


def test_reception_calls_box_answer_and_each_side_hangs_up(asterisk, intercom, baresip) -> None:
    phone = baresip("5001")
    box = intercom()
    box.wait_state("idle")
    # 1: the phone hangs up
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    st = box.wait_state("ringing")
    assert "5001" in st["remote"]
    assert box.cmd("answer")["ok"]
    phone.wait_event("CALL_ESTABLISHED", 10)
    box.wait_state("in_call")
    phone.command("hangup")
    st = box.wait_state("idle")
    assert st["last_call_end"] == "remote hangup"
    # 2: the box hangs up
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    box.wait_state("ringing")
    assert box.cmd("answer")["ok"]
    phone.wait_event("CALL_ESTABLISHED", 10)
    box.wait_state("in_call")
    assert box.cmd("hangup")["ok"]
    phone.wait_event("CALL_CLOSED", 10)
    assert box.wait_state("idle")["registered"] is True


def test_cancel_before_answer(asterisk, intercom, baresip) -> None:
    phone = baresip("5001")
    box = intercom()
    box.wait_state("idle")
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    box.wait_state("ringing")
    phone.command("hangup")
    st = box.wait_state("idle")
    assert st["last_call_end"] == "cancelled by caller"
    assert "SIP/2.0 487 Request Terminated" in box.log()
    assert not box.cmd("answer")["ok"], "nothing left to answer"


def test_box_rejects_a_call_while_ringing_with_603(asterisk, intercom, baresip) -> None:
    phone = baresip("5001")
    box = intercom()
    box.wait_state("idle")
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    box.wait_state("ringing")
    assert box.cmd("hangup")["ok"]
    phone.wait_event("CALL_CLOSED", 10)
    assert "SIP/2.0 603 Decline" in box.log()
    box.wait_state("idle")


def test_asterisk_restart_restores_registration(asterisk, intercom) -> None:
    box = intercom(keepalive_interval=1, t1=0.1, t2=0.4, t4=0.5, retry_min=1, retry_max=2)
    box.wait_state("idle")
    asterisk.stop()
    st = wait_for(lambda: (s := box.status()).get("state") == "offline" and s, 15, 0.2,
                  "the box to notice Asterisk is gone")
    assert st["registered"] is False and "127.0.0.1" in (st["last_error"] or "")
    time.sleep(3)
    assert box.proc.poll() is None
    restarted = time.monotonic()
    asterisk.start()
    wait_for(lambda: asterisk.registered("5002"), 10, 0.1, "re-registration")
    took = time.monotonic() - restarted
    assert took <= 2 * 2 + 1.5, f"registered again {took:.1f} s after restart (retry_max 2 s)"
    assert box.wait_state("idle")["registered"] is True


def _call_in_and_answer(asterisk, box, phone) -> dict:
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    box.wait_state("ringing")
    assert box.cmd("answer")["ok"]
    phone.wait_event("CALL_ESTABLISHED", 10)
    return box.wait_state("in_call")


def _invite_cseqs(log: str) -> list[int]:
    """CSeq numbers of the INVITEs the box received, one per transaction (retransmissions
    of the same request counted once)."""
    found = re.findall(r"recv from [^\n]+\nINVITE sip:5002@.*?\nCSeq: (\d+) INVITE", log,
                       re.S | re.I)
    return sorted({int(n) for n in found})


def test_direct_media_off_keeps_rtp_on_asterisk(asterisk, intercom, baresip) -> None:
    phone = baresip("5001")
    box = intercom()
    box.wait_state("idle")
    answered = _call_in_and_answer(asterisk, box, phone)["media"]
    assert asterisk.rtp_base <= answered["remote_port"] <= asterisk.rtp_base + 998, answered
    time.sleep(2)  # with direct_media=yes Asterisk re-INVITEs within about half a second
    st = box.status()
    assert st["state"] == "in_call" and st["media"] == answered, "media never moved"
    assert st["rtp"]["received"] > 0, "Asterisk relays RTP to the box"
    assert _invite_cseqs(box.log()) == [_invite_cseqs(box.log())[0]], \
        "one INVITE transaction, no re-INVITE from Asterisk"
    box.cmd("hangup")
    box.wait_state("idle")


@pytest.mark.direct_media
def test_direct_media_on_reinvite_moves_rtp_to_the_phone(asterisk, intercom, baresip) -> None:
    phone = baresip("5001")
    box = intercom()
    box.wait_state("idle")
    _call_in_and_answer(asterisk, box, phone)
    low, high = phone.rtp_ports
    media = wait_for(lambda: (m := box.status()["media"]) and low <= m["remote_port"] <= high
                     and m, 10, 0.2, "re-INVITE pointing media at baresip")
    assert media["remote_addr"] == "127.0.0.1"
    assert box.status()["state"] == "in_call"
    assert len(_invite_cseqs(box.log())) == 2, "the initial INVITE and Asterisk's re-INVITE"
    phone.command("hangup")
    box.wait_state("idle")


def test_tcp_transport(asterisk, intercom, baresip) -> None:
    phone = baresip("5001")
    box = intercom(transport="tcp")
    wait_for(lambda: asterisk.registered("5002"), 10, 0.1, "5002 over TCP")
    assert re.search(r"5002/sip:5002@\S+;transport=tcp", asterisk.contacts(), re.I)
    _call_in_and_answer(asterisk, box, phone)
    phone.command("hangup")
    assert box.wait_state("idle")["last_call_end"] == "remote hangup"


def test_auto_answer(asterisk, intercom, baresip) -> None:
    phone = baresip("5001")
    box = intercom(calls={"auto_answer": True, "auto_answer_delay": 0.5})
    box.wait_state("idle")
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    box.wait_state("ringing", 10)
    phone.wait_event("CALL_ESTABLISHED", 10)
    assert box.wait_state("in_call")["remote"].startswith("Reception")
    phone.command("hangup")
    box.wait_state("idle")


def test_call_through_asterisk_carries_a_tone_each_way(asterisk, intercom, baresip,
                                                       tmp_path) -> None:
    """The box sends 700 Hz, baresip (ausine) sends 1000 Hz; each side's recording of what it
    received is judged by its FFT peak."""
    from ..audio import baresip_heard, peak_hz, wav_array

    record = tmp_path / "baresip-rec"
    record.mkdir()
    phone = baresip("5001", answer="auto", tone_hz=1000, record_dir=record)
    heard = tmp_path / "box-heard.wav"
    box = intercom(audio={"capture": "tone:700", "playback": f"wav:{heard}"})
    box.wait_state("idle")
    assert box.cmd("call", "5001")["ok"]
    phone.wait_event("CALL_ESTABLISHED", 15)
    box.wait_state("in_call")
    time.sleep(4)
    rtp = box.status()["rtp"]
    assert box.cmd("hangup")["ok"]
    phone.wait_event("CALL_CLOSED", 10)
    box.wait_state("idle")
    x, rate = wav_array(heard)
    assert abs(peak_hz(x[rate:], rate) - 1000) < 15, "the box heard baresip's 1000 Hz"
    y, yrate = baresip_heard(record)
    assert abs(peak_hz(y[yrate:], yrate) - 700) < 15, "baresip heard the box's 700 Hz"
    assert rtp["received"] > 100 and rtp["sent"] > 100 and rtp["malformed"] == 0
