"""Received DTMF keys never reach the log, at any level: a real ``intercom run`` at
``log.level: debug`` (every SIP message dumped) takes the door code from a real phone through
Asterisk twice, once as SIP INFO (Asterisk's ``dtmf_mode=info`` towards the box) and once as
RFC 4733; the log shows the INFO requests and the key count, never a key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devtools.asterisk import Asterisk
from devtools.baresip import Baresip
from devtools.box.process import Intercom
from devtools.waiting import wait_for

pytestmark = pytest.mark.integration


def set_box_dtmf_mode(pbx: Asterisk, mode: str) -> None:
    conf = pbx.dir / "etc" / "pjsip.conf"
    text = re.sub(r"(\[5002\]\(phone-endpoint\)\n)(dtmf_mode=\w+\n)?", rf"\1dtmf_mode={mode}\n",
                  conf.read_text(), count=1)
    conf.write_text(text)


def open_door(box: Intercom, phone: Baresip, pbx: Asterisk, openings: int) -> None:
    phone.command("dial", f"sip:5002@127.0.0.1:{pbx.port}")
    phone.wait_event("CALL_ESTABLISHED", 15)
    box.wait_state("in_call")
    phone.command("sndcode", "*7")
    wait_for(lambda: box.status()["door_openings"] == openings, 15, 0.1, "the door to open")
    phone.command("hangup")
    phone.wait_event("CALL_CLOSED", 10)
    box.wait_state("idle")


def test_keys_by_info_and_rfc4733_never_reach_a_debug_log(tmp_path: Path) -> None:
    pbx = Asterisk()
    set_box_dtmf_mode(pbx, "info")
    phone = box = None
    try:
        pbx.start()
        phone = Baresip(pbx, "5001", tmp=tmp_path / "phone").start()
        box = Intercom(tmp_path / "box", pbx.port, log_level="debug",
                       calls={"door_code": "*7", "auto_answer": True})
        box.start().wait_state("idle")
        open_door(box, phone, pbx, 1)  # keys as SIP INFO
        set_box_dtmf_mode(pbx, "rfc4733")
        pbx.rx("module reload res_pjsip.so")
        open_door(box, phone, pbx, 2)  # keys as RFC 4733 telephone-events
        st = box.status()
        assert st["dtmf_keys_received"] == 4
        assert (st["rtp"] or {}).get("dtmf_received") == 2, "the second call's keys came by RTP"
    finally:
        if box is not None:
            box.stop()
        if phone is not None:
            phone.stop()
        pbx.cleanup()
    log = box.log()
    infos = re.findall(r"\nINFO sip:[^\n]*\n(?:[^\n]+\n)*\n([^\n]*)", log)
    assert len(infos) >= 2, "the debug log dumps the INFO requests"
    assert all(body.startswith("<body redacted") for body in infos), infos
    assert not re.search(r"(?i)signal\s*=\s*[0-9*#a-d]", log), "an INFO body in the log"
    assert "digit=" not in log and "DEBUG" in log
    assert log.count("DTMF key received (info)") == 2
    assert log.count("DTMF key received (rtp)") == 2
    assert not re.search(r"'\*'|'7'", log), "a key's repr in the log"
