"""More than one PBX with real parts: dnsmasq serving NAPTR -> SRV -> A records of pbx.test on
loopback, two Asterisk 22 instances on their own loopback addresses (127.0.0.11 and .12), the
box as a process resolving sip.server the RFC 3263 way through sip.dns_servers, and a baresip
phone. Primary stopped -> the box registers with the secondary within seconds and takes a call
from it (its audio checked by FFT); primary back -> the box returns while that call is up, and
the call is not dropped."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.asterisk import Asterisk
from devtools.dnsmasq import Dnsmasq
from devtools.waiting import run_apart
from firmware.resolver import IPV6_ONLY, Dns, resolve_entry

from ..audio import frame_rms, peak_hz, wav_array
from .failover_parts import PRIMARY, SECONDARY, site

pytestmark = pytest.mark.integration


def records(port1: int, port2: int) -> list[str]:
    """pbx.test: a NAPTR to _sip._udp.site.pbx.test (so plain SRV of pbx.test would be the
    wrong answer), SRV priority 10 -> pbx1, 20 -> pbx2; plain.test: A only; mixed.test: SRV
    priority 10 -> v6only.test (AAAA only), 20 -> both.test (A and AAAA)."""
    return ["--naptr-record=pbx.test,10,10,S,SIP+D2U,,_sip._udp.site.pbx.test",
            "--naptr-record=pbx.test,10,20,S,SIPS+D2T,,_sips._tcp.site.pbx.test",
            f"--srv-host=_sip._udp.site.pbx.test,pbx1.pbx.test,{port1},10,0",
            f"--srv-host=_sip._udp.site.pbx.test,pbx2.pbx.test,{port2},20,0",
            f"--host-record=pbx1.pbx.test,{PRIMARY}", f"--host-record=pbx2.pbx.test,{SECONDARY}",
            "--host-record=plain.test,127.0.0.13",
            f"--srv-host=_sip._udp.mixed.test,v6only.test,{port1},10,0",
            f"--srv-host=_sip._udp.mixed.test,both.test,{port2},20,0",
            "--host-record=v6only.test,::1", "--host-record=both.test,127.0.0.14,::1"]


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
        # IPv4 only: an AAAA-only SRV target is skipped with a reason, the next one used;
        # a name with both uses its A record; an AAAA-only name alone is an error saying so
        skipped: list[str] = []
        mixed = await resolve_entry(d, "mixed.test", "udp", skipped=skipped)
        assert [(t.host, t.port, t.name) for t in mixed] == [("127.0.0.14", 5072, "both.test")]
        assert skipped == [f"'v6only.test' {IPV6_ONLY} (SRV target of _sip._udp.mixed.test)"]
        with pytest.raises(OSError, match=re.escape(f"'v6only.test' {IPV6_ONLY}")):
            await resolve_entry(d, "v6only.test:5060", "udp")
        # a DNS server that never answers: a bounded, worded failure, not a hang
        silent = Dns([("127.0.0.1", 9)])
        began = time.monotonic()
        with pytest.raises(OSError):
            await resolve_entry(silent, "pbx.test", "udp")
        assert time.monotonic() - began < 10
    run_apart(go())
    assert "query[NAPTR] pbx.test" in dns.log.read_text()
    assert "query[AAAA] v6only.test" in dns.log.read_text()


def test_primary_down_secondary_takes_the_call_primary_back_call_kept(tmp_path: Path) -> None:
    with site(tmp_path, lambda a, b: records(a.port, b.port), 33000) as s:
        box = s.start_box(server="pbx.test", keepalive_interval=1, t1=0.1, t2=0.4, t4=0.5)
        reg = s.wait_at(s.pbx1, 15, "the primary")
        p1, p2 = s.address(s.pbx1), s.address(s.pbx2)
        assert reg["via"] == "NAPTR" and reg["preferred"] is True
        assert reg["targets"] == [p1, p2]
        assert not s.pbx2.registered("5002")

        # primary stopped: keep-alives (1 s) go unanswered, Timer F (64*T1 = 6.4 s) fires;
        # a call from a phone on the secondary: answered, audio by FFT
        phone = s.fail_over_and_answer(within=15)
        assert box.wait_state("in_call")["registered"] is True
        time.sleep(2)

        # primary back: the box returns to it while the call is up
        s.pbx1.start()
        s.wait_at(s.pbx1, 20, "the primary again")
        st = box.status()
        assert st["state"] == "in_call", "the call is not dropped by the move"
        assert "answers again" in st["registrar"]["moved"] and st["registrar"]["preferred"]
        time.sleep(2.5)
        assert box.status()["state"] == "in_call"
        phone.command("hangup")
        st = box.wait_state("idle", 10)
        assert st["last_call_end"] == "remote hangup"
        assert "call with" in box.log()

        x, rate = wav_array(s.heard)
        assert len(x) > rate * 4
        assert abs(peak_hz(x[rate:], rate) - 1000) < 15, "the box heard the phone's 1000 Hz"
        tail = x[-int(rate * 1.5):]
        assert abs(peak_hz(tail, rate) - 1000) < 15, "still hearing it after the move back"
        assert float((frame_rms(tail) > 300).mean()) > 0.9, "no gap after the move back"


def test_tcp_moves_its_one_connection_to_the_secondary_and_back(tmp_path: Path) -> None:
    """Over TCP the box holds one connection: a primary that closes it (stopped) moves the
    registration and the connection to the secondary at once, a call from there works, and
    once it is idle again the box tries the primary on schedule and moves back."""
    def tcp(a: Asterisk, b: Asterisk) -> list[str]:
        return [r.replace("_sip._udp", "_sip._tcp").replace("SIP+D2U", "SIP+D2T")
                for r in records(a.port, b.port)]

    with site(tmp_path, tcp, 35000) as s:
        s.start_box(server="pbx.test", transport="tcp")
        s.wait_at(s.pbx1, 15, "the primary over TCP")
        # a closed connection moves at once; 5 s idle there: two probes of the stopped primary
        phone = s.fail_over_and_answer(within=8, idle=5)
        s.stream_returns_after_the_call(phone)
