"""The resolver's IPv4-only rule and its ordering, against a zone held in memory behind the
resolver's own query method (``Dns.records``; the records are dnspython's own objects): an
SRV target with IPv6 (AAAA) addresses only is skipped with a reason and the next one used, a
name with both uses its A records, an IPv6 address entry is skipped, and a list whose every
entry is IPv6-only is one error naming why; and the name each target must prove over TLS.
The same against dnsmasq and Asterisk: tests/integration/test_failover.py and
test_failover_tls.py."""

from __future__ import annotations

from typing import Any

import dns.rdata
import pytest

from devtools.waiting import run_apart
from firmware.config import SipSettings
from firmware.resolver import IPV6_ONLY, Dns, resolve_entry, resolve_servers
from firmware.sip.targets import MAX_TARGETS, Target

ZONE = {
    ("_sips._tcp.pbx.test", "SRV"): ["10 0 5061 pbx1.pbx.test.", "20 0 5062 pbx2.pbx.test.",
                                     "30 0 5063 pbx3.pbx.test."],
    ("pbx1.pbx.test", "AAAA"): ["::1"],  # IPv6 only: skipped
    ("pbx2.pbx.test", "A"): ["127.0.0.12"],
    ("pbx2.pbx.test", "AAAA"): ["::2"],  # both: its A record
    ("pbx3.pbx.test", "A"): ["127.0.0.13"],
    ("v6.test", "AAAA"): ["::1"],
    ("v4.test", "A"): ["127.0.0.14"],
}


class ZoneDns(Dns):
    """``Dns`` whose queries are answered from ``ZONE`` (every other step is the real one)."""

    def __init__(self) -> None:
        super().__init__([("127.0.0.1", 53)])  # a server set: addresses come from records()
        self.asked: list[tuple[str, str]] = []

    async def records(self, name: str, kind: str) -> list[Any]:
        self.asked.append((name, kind))
        return [dns.rdata.from_text("IN", kind, text) for text in ZONE.get((name, kind), [])]


def test_an_ipv6_only_srv_target_is_skipped_with_a_reason_and_the_next_used() -> None:
    zone, skipped = ZoneDns(), []
    found = run_apart(resolve_entry(zone, "pbx.test", "tls", lambda n: 0, skipped))
    assert [(t.host, t.port, t.name) for t in found] == \
        [("127.0.0.12", 5062, "pbx2.pbx.test"), ("127.0.0.13", 5063, "pbx3.pbx.test")]
    assert skipped == [f"'pbx1.pbx.test' {IPV6_ONLY} (SRV target of _sips._tcp.pbx.test)"]
    assert ("pbx2.pbx.test", "AAAA") not in zone.asked, "a name with A records: AAAA not asked"


def test_every_entry_ipv6_only_is_one_error_naming_why() -> None:
    with pytest.raises(OSError, match=r"'v6\.test' has only IPv6 \(AAAA\) addresses"):
        run_apart(resolve_entry(ZoneDns(), "v6.test:5060", "udp"))
    with pytest.raises(OSError, match=r"'v6\.test' has only IPv6"):
        run_apart(resolve_entry(ZoneDns(), "v6.test", "udp"))
    with pytest.raises(OSError, match="no SRV records and no IPv4 address"):
        run_apart(resolve_entry(ZoneDns(), "nothing.test", "udp"))
    with pytest.raises(OSError, match="is an IPv6 address and the box speaks IPv4 only"):
        run_apart(resolve_entry(ZoneDns(), "[::1]:5060", "udp"))


def test_a_server_list_moves_on_past_ipv6_only_entries_and_says_so() -> None:
    sip = SipSettings(server="v6.test", servers=("v6.test:5060", "[::1]:5070", "v4.test:5080"),
                      username="5002")
    found = run_apart(resolve_servers(sip, dns=ZoneDns()))
    assert [str(t) for t in found.targets] == ["127.0.0.14:5080"]
    assert found.trusted == ["127.0.0.14"], "a skipped name is not trusted"
    assert found.skipped == [f"'v6.test' {IPV6_ONLY}",
                             "'[::1]:5070' is an IPv6 address and the box speaks IPv4 only"]
    with pytest.raises(OSError, match=r"'v6\.test' has only IPv6.*'\[::1\]:5070' is an IPv6"):
        run_apart(resolve_servers(SipSettings(server="v6.test", servers=(
            "v6.test:5060", "[::1]:5070"), username="5002"), dns=ZoneDns()))


def test_the_name_each_target_must_prove_over_tls() -> None:
    found = run_apart(resolve_entry(ZoneDns(), "pbx.test", "tls", lambda n: 0))
    assert [t.identity for t in found] == ["pbx2.pbx.test", "pbx3.pbx.test"], \
        "an SRV target inside the configured domain: its own name"
    # outside the domain (a name ending in it is not inside it): the configured domain
    assert Target("10.0.0.1", 5061, "pbx.hoster.example", "SRV", "pbx.test").identity == \
        "pbx.test"
    assert Target("10.0.0.1", 5061, "evilpbx.test", "NAPTR", "pbx.test").identity == "pbx.test"
    assert Target("10.0.0.1", 5061, "PBX1.Pbx.Test.", "SRV", "pbx.test").identity == \
        "PBX1.Pbx.Test."
    assert Target("10.0.0.1", 5061, "pbx1.lan", "A").identity == "pbx1.lan"
    assert Target("10.0.0.1", 5061, "10.0.0.1:5061", "address").identity == "10.0.0.1"


def test_with_an_outbound_proxy_at_most_the_firewalls_16_addresses_are_trusted() -> None:
    """The firewall ignores a registrar file of more than 16 addresses (firewall.py): the proxy's
    addresses come first, the servers' fill what is left, and the rest is said, not trusted."""
    servers = tuple(f"127.0.1.{i}:5060" for i in range(1, 15))
    sip = SipSettings(server="127.0.1.1", servers=servers, username="5002",
                      outbound_proxy="proxy.test")
    zone = ZoneDns()
    ZONE[("proxy.test", "A")] = [f"127.0.2.{i}" for i in range(1, 6)]
    try:
        found = run_apart(resolve_servers(sip, dns=zone))
    finally:
        del ZONE[("proxy.test", "A")]
    assert [t.host for t in found.targets] == [f"127.0.2.{i}" for i in range(1, 6)]
    assert len(found.trusted) == MAX_TARGETS
    assert {f"127.0.2.{i}" for i in range(1, 6)} <= set(found.trusted), "the proxy first"
    assert {f"127.0.1.{i}" for i in range(1, 12)} <= set(found.trusted)
    assert "3 server address(es) beyond the first 16" in found.skipped[-1]
