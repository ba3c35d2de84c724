"""More than one PBX with real parts: dnsmasq serving NAPTR -> SRV -> A records of pbx.test on
loopback, two Asterisk 22 instances on their own loopback addresses (127.0.0.11 and .12), the
box as a process resolving sip.server the RFC 3263 way through sip.dns_servers, and a baresip
phone. Primary stopped -> the box registers with the secondary within seconds and takes a call
from it (its audio checked by FFT); primary back -> the box returns while that call is up, and
the call is not dropped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.asterisk import Asterisk
from devtools.baresip import Baresip
from devtools.box.process import Intercom
from devtools.dnsmasq import Dnsmasq
from devtools.waiting import run_apart, wait_for
from firmware.resolver import Dns, resolve_entry

from ..audio import frame_rms, peak_hz, wav_array

pytestmark = pytest.mark.integration
PRIMARY, SECONDARY = "127.0.0.11", "127.0.0.12"


def records(port1: int, port2: int) -> list[str]:
    """pbx.test: a NAPTR to _sip._udp.site.pbx.test (so plain SRV of pbx.test would be the
    wrong answer), SRV priority 10 -> pbx1, 20 -> pbx2; plain.test: A only."""
    return ["--naptr-record=pbx.test,10,10,S,SIP+D2U,,_sip._udp.site.pbx.test",
            "--naptr-record=pbx.test,10,20,S,SIPS+D2T,,_sips._tcp.site.pbx.test",
            f"--srv-host=_sip._udp.site.pbx.test,pbx1.pbx.test,{port1},10,0",
            f"--srv-host=_sip._udp.site.pbx.test,pbx2.pbx.test,{port2},20,0",
            f"--host-record=pbx1.pbx.test,{PRIMARY}", f"--host-record=pbx2.pbx.test,{SECONDARY}",
            "--host-record=plain.test,127.0.0.13"]


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(records(5071, 5072), tmp_path / "dnsmasq.log")
    try:
        yield server.start()
    finally:
        server.stop()


def test_rfc3263_resolution_against_dnsmasq(dns: Dnsmasq) -> None:
    async def go() -> None:
        d = Dns([("127.0.0.1", dns.port)])
        naptr = await resolve_entry(d, "pbx.test", "udp")
        assert [(t.host, t.port, t.via) for t in naptr] == \
            [(PRIMARY, 5071, "NAPTR"), (SECONDARY, 5072, "NAPTR")]
        assert naptr[0].name == "pbx1.pbx.test"
        plain = await resolve_entry(d, "plain.test", "udp")
        assert [(t.host, t.port, t.via) for t in plain] == [("127.0.0.13", 5060, "A default")]
        explicit = await resolve_entry(d, "pbx1.pbx.test:5099", "udp")
        assert [(t.host, t.port, t.via) for t in explicit] == [(PRIMARY, 5099, "A")]
        with pytest.raises(OSError, match="no SRV records and no IPv4 address"):
            await resolve_entry(d, "missing.test", "udp")
        # a DNS server that never answers: a bounded, worded failure, not a hang
        silent = Dns([("127.0.0.1", 9)])
        began = time.monotonic()
        with pytest.raises(OSError):
            await resolve_entry(silent, "pbx.test", "udp")
        assert time.monotonic() - began < 10
    run_apart(go())
    assert "query[NAPTR] pbx.test" in dns.log.read_text()


def _registrar(box: Intercom) -> dict:
    return box.status().get("registrar") or {}


def test_primary_down_secondary_takes_the_call_primary_back_call_kept(tmp_path: Path) -> None:
    from devtools.loopback import free_port
    p1, p2 = free_port(), free_port()
    dns = Dnsmasq(records(p1, p2), tmp_path / "dnsmasq.log").start()
    pbx1 = Asterisk(bind=PRIMARY, port=p1, rtp_base=33000)
    pbx2 = Asterisk(bind=SECONDARY, port=p2, rtp_base=34000)
    started: list = [pbx1, pbx2]
    box = phone = None
    try:
        pbx1.start()
        pbx2.start()
        heard = tmp_path / "box-heard.wav"
        box = Intercom(tmp_path / "box", 0, server="pbx.test", port=None,
                       dns_servers=[dns.server], local_address="127.0.0.1",
                       keepalive_interval=1, t1=0.1, t2=0.4, t4=0.5, retry_min=1,
                       retry_max=2, failback_interval=2,
                       calls={"auto_answer": True, "auto_answer_delay": 0.2},
                       audio={"capture": "tone:700", "playback": f"wav:{heard}"}).start()
        wait_for(lambda: pbx1.registered("5002"), 15, 0.2, "5002 at the primary")
        reg = wait_for(lambda: (r := _registrar(box)).get("address") == f"{PRIMARY}:{p1}"
                       and r, 10, 0.2, "status naming the primary")
        assert reg["via"] == "NAPTR" and reg["preferred"] is True
        assert reg["targets"] == [f"{PRIMARY}:{p1}", f"{SECONDARY}:{p2}"]
        assert not pbx2.registered("5002")

        # primary stopped: keep-alives (1 s) go unanswered, Timer F (64*T1 = 6.4 s) fires
        pbx1.stop()
        stopped = time.monotonic()
        wait_for(lambda: pbx2.registered("5002"), 20, 0.2, "5002 at the secondary")
        moved_in = time.monotonic() - stopped
        assert moved_in < 15, f"moved after {moved_in:.1f} s"
        reg = wait_for(lambda: (r := _registrar(box)).get("address") == f"{SECONDARY}:{p2}"
                       and r, 5, 0.2, "status naming the secondary")
        assert reg["preferred"] is False and f"{PRIMARY}:{p1} failed" in reg["moved"]
        assert box.wait_state("idle")["registered"] is True

        # a call from a phone on the secondary: answered, audio by FFT
        phone = Baresip(pbx2, "5001", tone_hz=1000, tmp=tmp_path / "phone")
        phone.start()
        phone.command("dial", f"sip:5002@{SECONDARY}:{p2}")
        box.wait_state("in_call", 15)
        phone.wait_event("CALL_ESTABLISHED", 10)
        time.sleep(2)

        # primary back: the box returns to it while the call is up
        pbx1.start()
        wait_for(lambda: (r := _registrar(box)).get("address") == f"{PRIMARY}:{p1}" and r,
                 20, 0.2, "the box back at the primary")
        wait_for(lambda: pbx1.registered("5002"), 10, 0.2, "5002 at the primary again")
        st = box.status()
        assert st["state"] == "in_call", "the call is not dropped by the move"
        assert "answers again" in st["registrar"]["moved"] and st["registrar"]["preferred"]
        time.sleep(2.5)
        assert box.status()["state"] == "in_call"
        phone.command("hangup")
        st = box.wait_state("idle", 10)
        assert st["last_call_end"] == "remote hangup"
        assert "call with" in box.log()

        x, rate = wav_array(heard)
        assert len(x) > rate * 4
        assert abs(peak_hz(x[rate:], rate) - 1000) < 15, "the box heard the phone's 1000 Hz"
        tail = x[-int(rate * 1.5):]
        assert abs(peak_hz(tail, rate) - 1000) < 15, "still hearing it after the move back"
        assert float((frame_rms(tail) > 300).mean()) > 0.9, "no gap after the move back"
    finally:
        for part in (phone, box):
            if part is not None:
                part.stop()
        for pbx in started:
            pbx.cleanup()
        dns.stop()


def test_tcp_moves_its_one_connection_to_the_secondary_and_back(tmp_path: Path) -> None:
    """Over TCP the box holds one connection: a primary that closes it (stopped) moves the
    registration and the connection to the secondary at once, a call from there works, and
    once it is idle again the box tries the primary on schedule and moves back."""
    from devtools.loopback import free_port
    p1, p2 = free_port(), free_port()
    dns = Dnsmasq([r.replace("_sip._udp", "_sip._tcp").replace("SIP+D2U", "SIP+D2T")
                   for r in records(p1, p2)], tmp_path / "dnsmasq.log").start()
    pbx1 = Asterisk(bind=PRIMARY, port=p1, rtp_base=35000)
    pbx2 = Asterisk(bind=SECONDARY, port=p2, rtp_base=36000)
    box = phone = None
    try:
        pbx1.start()
        pbx2.start()
        heard = tmp_path / "box-heard.wav"
        box = Intercom(tmp_path / "box", 0, server="pbx.test", port=None, transport="tcp",
                       dns_servers=[dns.server], local_address="127.0.0.1", retry_min=1,
                       retry_max=2, failback_interval=2,
                       calls={"auto_answer": True, "auto_answer_delay": 0.2},
                       audio={"capture": "tone:700", "playback": f"wav:{heard}"}).start()
        wait_for(lambda: pbx1.registered("5002"), 15, 0.2, "5002 at the primary over TCP")
        assert _registrar(box)["address"] == f"{PRIMARY}:{p1}"
        pbx1.stop()
        stopped = time.monotonic()
        wait_for(lambda: _registrar(box).get("address") == f"{SECONDARY}:{p2}" and
                 pbx2.registered("5002"), 15, 0.2, "5002 at the secondary over TCP")
        assert time.monotonic() - stopped < 8, "a closed connection moves at once"
        phone = Baresip(pbx2, "5001", tone_hz=1000, tmp=tmp_path / "phone")
        phone.start()
        phone.command("dial", f"sip:5002@{SECONDARY}:{p2}")
        box.wait_state("in_call", 15)
        time.sleep(2)
        pbx1.start()
        time.sleep(3)  # the return is due (failback 2 s) but waits for the call's end
        assert box.status()["state"] == "in_call"
        assert _registrar(box)["address"] == f"{SECONDARY}:{p2}"
        phone.command("hangup")
        box.wait_state("idle", 10)
        wait_for(lambda: _registrar(box).get("address") == f"{PRIMARY}:{p1}", 15, 0.2,
                 "the box back at the primary")
        wait_for(lambda: box.status().get("registered"), 10, 0.2, "registered again")
        wait_for(lambda: pbx1.registered("5002"), 10, 0.2, "5002 at the primary again")
        x, rate = wav_array(heard)
        assert abs(peak_hz(x[rate:], rate) - 1000) < 15, "the call over TCP carried audio"
    finally:
        for part in (phone, box):
            if part is not None:
                part.stop()
        for pbx in (pbx1, pbx2):
            pbx.cleanup()
        dns.stop()
