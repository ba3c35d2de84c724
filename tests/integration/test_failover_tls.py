"""Failover over TLS between two real Asterisk 22 instances, each with a TLS transport and a
certificate of its own from one test CA naming its own host (pbx1.pbx.test, pbx2.pbx.test),
the names served by dnsmasq (``_sips._tcp`` SRV records, or an explicit list of names).

The box (transport tls, verification on) registers with the primary; primary stopped -> a new
connection to the secondary, whose certificate is checked against the secondary's own name,
a call from there with SRTP (tone by FFT); primary back -> the box returns. A secondary whose
certificate carries another name (the primary's) is refused, status says why, and the box
never registers there: trusting every resolved server holds over TLS only for a server that
proves the name it was found under. And the box being IPv4-only: an SRV target with AAAA
records only is skipped (status says why, the log once), a name with A and AAAA records is
reached over IPv4."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from devtools.asterisk import Asterisk
from devtools.certificate import make_ca, make_server_cert
from devtools.waiting import wait_for
from firmware.firewall import REGISTRAR_FILE
from firmware.resolver import IPV6_ONLY

from .failover_parts import PRIMARY, SECONDARY, registrar, site

pytestmark = pytest.mark.integration
TLS_CONTACT = re.compile(r"5002/sip:5002@\S+;transport=tls", re.I)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """One CA; a certificate for each PBX's name, and an impostor's for the secondary that
    names the primary (valid, same CA, wrong host)."""
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca(root / "ca", "Intercom Failover Test CA")
    return {"ca": ca,
            "pbx1": make_server_cert(root / "pbx1", ca, "DNS:pbx1.pbx.test"),
            "pbx2": make_server_cert(root / "pbx2", ca, "DNS:pbx2.pbx.test"),
            "impostor": make_server_cert(root / "impostor", ca, "DNS:pbx1.pbx.test")}


def sips_records(a: Asterisk, b: Asterisk) -> list[str]:
    """_sips._tcp.pbx.test: priority 5 -> v6only.pbx.test (AAAA only), 10 -> pbx1,
    20 -> pbx2 (A and AAAA)."""
    return [f"--srv-host=_sips._tcp.pbx.test,v6only.pbx.test,{a.sip_tls_port},5,0",
            f"--srv-host=_sips._tcp.pbx.test,pbx1.pbx.test,{a.sip_tls_port},10,0",
            f"--srv-host=_sips._tcp.pbx.test,pbx2.pbx.test,{b.sip_tls_port},20,0",
            "--host-record=v6only.pbx.test,::1", f"--host-record=pbx1.pbx.test,{PRIMARY}",
            f"--host-record=pbx2.pbx.test,{SECONDARY},::1"]


def names_only(a: Asterisk, b: Asterisk) -> list[str]:
    return [f"--host-record=pbx1.pbx.test,{PRIMARY}", f"--host-record=pbx2.pbx.test,{SECONDARY}"]


def test_tls_failover_verifies_each_server_by_its_own_name(tmp_path: Path, pki) -> None:
    with site(tmp_path, sips_records, 37000, tls1=pki["pbx1"], tls2=pki["pbx2"],
              media_encryption="sdes") as s:
        box = s.start_box(server="pbx.test", transport="tls",
                          tls={"ca_file": str(pki["ca"][0])})
        reg = s.wait_at(s.pbx1, 20, "the primary over TLS")
        assert reg["via"] == "SRV" and reg["name"] == "pbx1.pbx.test"
        assert reg["targets"] == [s.address(s.pbx1), s.address(s.pbx2)], \
            "the AAAA-only target is not among them; pbx2 (A and AAAA) by its A record"
        assert reg["skipped"] == [
            f"'v6only.pbx.test' {IPV6_ONLY} (SRV target of _sips._tcp.pbx.test)"]
        assert TLS_CONTACT.search(s.pbx1.contacts()), s.pbx1.contacts()

        # primary stopped: a new TLS connection to the secondary, verified as pbx2.pbx.test
        # (its certificate names nothing else), and a call from there with SRTP
        phone = s.fail_over_and_answer(within=8, idle=5, mediaenc="srtp-mand")
        assert registrar(box)["name"] == "pbx2.pbx.test"
        assert TLS_CONTACT.search(s.pbx2.contacts()), s.pbx2.contacts()
        time.sleep(1)
        assert box.status()["media"]["srtp"] == "AES_CM_128_HMAC_SHA1_80"

        # primary back: once the call is over, the box returns to it over TLS
        s.stream_returns_after_the_call(phone)
        assert TLS_CONTACT.search(s.pbx1.contacts()), s.pbx1.contacts()
        log = box.log()
        assert f"moving the connection from {s.address(s.pbx1)} to {s.address(s.pbx2)}" in log
        trusted = (s.tmp / "box" / REGISTRAR_FILE).read_text().split()
        assert trusted == [PRIMARY, SECONDARY], "both resolved servers, nothing else (no ::1)"
        assert log.count("does not verify") == 0
        assert log.count(f"SIP server skipped: 'v6only.pbx.test' {IPV6_ONLY}") == 1, \
            "said once, not at each of the three registrations' new DNS answer"


def test_a_secondary_with_another_name_is_refused_and_never_registered(
        tmp_path: Path, pki) -> None:
    """An explicit list of names; the secondary presents a certificate from the same CA that
    names the primary: checked against the name it was listed under, it does not verify."""
    with site(tmp_path, names_only, 39000, tls1=pki["pbx1"], tls2=pki["impostor"],
              media_encryption="sdes") as s:
        p1, p2 = s.pbx1.sip_tls_port, s.pbx2.sip_tls_port
        box = s.start_box(server=[f"pbx1.pbx.test:{p1}", f"pbx2.pbx.test:{p2}"],
                          transport="tls", tls={"ca_file": str(pki["ca"][0])})
        reg = s.wait_at(s.pbx1, 20, "the primary over TLS")
        assert reg["via"] == "A" and reg["name"] == "pbx1.pbx.test"

        s.pbx1.stop()
        st = wait_for(lambda: "does not verify" in ((st := box.status())["last_error"] or "")
                      and st, 20, 0.1, "the secondary refused")
        why = st["last_error"]
        assert f"TLS certificate of {SECONDARY}:{p2} does not verify" in why, why
        assert "expected name 'pbx2.pbx.test'" in why and "mismatch" in why.lower(), why
        assert st["registered"] is False
        until = time.monotonic() + 6
        while time.monotonic() < until:  # the box keeps trying both; never registers at pbx2
            assert not s.pbx2.registered("5002"), "registered with an impostor"
            assert box.status()["registered"] is False
            time.sleep(0.5)
        assert box.proc.poll() is None

        # the primary back: the box registers there again (not stuck on the refused one);
        # its status first: Asterisk keeps the binding from before its stop in its database
        s.pbx1.start()
        wait_for(lambda: (st := box.status())["registered"]
                 and st["registrar"]["address"] == s.address(s.pbx1), 30, 0.2,
                 "registered with the primary again")
        assert s.pbx1.registered("5002") and not s.pbx2.registered("5002")
