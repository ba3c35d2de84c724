"""One address parser, one answer: firmware.address, and SIP URIs, SDP and the configuration
that ask it. (The media core's answer over real sockets: tests/integration/test_fail_closed.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware import address
from firmware.config import ConfigError, load_config
from firmware.sip.errors import RemoteProtocolError
from firmware.sip.sdp import LocalMedia, accept_answer, answer_offer, build_offer, parse_sdp
from firmware.sip.uri import is_ip_literal, parse_sip_uri

# text that some parser somewhere would read as an address, and must not be one
NOT_IPV4 = ["010.0.0.1", "10.0.0.01", "00.0.0.0", "0x7f.0.0.1", "0177.0.0.1", "1.2.3",
            "1.2.3.4.5", "256.0.0.1", "1.2.3.256", "999.1.1.1", " 1.2.3.4", "1.2.3.4 ",
            "1.2.3.4\n", "1. 2.3.4", "1..3.4", ".1.2.3", "1.2.3.", "1.2.3.-4", "+1.2.3.4",
            "１.2.3.4", "١.٢.٣.٤", "127.1", "2130706433", "", "1.2.3.4/32", "1.2.3.4:5"]


@pytest.mark.parametrize("text", NOT_IPV4)
def test_what_is_not_a_dotted_quad(text: str) -> None:
    assert address.ipv4(text) is None
    assert address.ip(text) is None


@pytest.mark.parametrize("text", ["0.0.0.0", "1.2.3.4", "10.0.0.1", "127.0.0.1",
                                  "192.168.100.200", "255.255.255.255", "100.0.10.0"])
def test_strict_dotted_quads(text: str) -> None:
    assert address.ipv4(text) == text
    assert address.ip(text) == text


@pytest.mark.parametrize(("text", "canonical"), [
    ("::1", "::1"), ("2001:DB8::1", "2001:db8::1"), ("2001:db8:0:0:0:0:0:1", "2001:db8::1"),
    ("fe80::1", "fe80::1"), ("::", "::")])
def test_ipv6_canonical(text: str, canonical: str) -> None:
    assert address.ipv6(text) == canonical
    assert address.ip(text) == canonical
    assert address.ipv4(text) is None


@pytest.mark.parametrize("text", ["fe80::1%eth0", "[::1]", "2001:db8::g", "1:2:3:4:5:6:7:8:9",
                                  ":::1", "::ffff:010.0.0.1", "::ffff:1.2.3", "1.2.3.4::",
                                  "2001:db8::1 ", "", ":"])
def test_not_ipv6(text: str) -> None:
    assert address.ipv6(text) is None
    assert address.ip(text) is None


def test_a_mapped_ipv4_address_is_that_ipv4_host() -> None:
    assert address.ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert address.ip("::FFFF:c000:0201") == "192.0.2.1"
    assert address.ipv4("::ffff:192.0.2.1") is None  # the media core's socket is IPv4


def test_numeric_text_is_never_a_name_and_unicast_is_checked() -> None:
    assert address.looks_numeric("010.0.0.1") and address.looks_numeric("1.2.3")
    assert not address.looks_numeric("pbx.example") and not address.looks_numeric("...")
    assert address.is_unicast_ipv4("192.0.2.1")
    for text in ("0.0.0.0", "255.255.255.255", "224.0.0.1", "239.1.2.3", "010.0.0.1"):
        assert not address.is_unicast_ipv4(text), text


# ------------------------------------------------------------------------------ SIP URIs
@pytest.mark.parametrize("host", ["010.0.0.1", "1.2.3", "256.1.1.1", "1.2.3.4.5",
                                  "[fe80::1%eth0]", "[::g]", "[1.2.3.4]"])
def test_sip_uri_hosts_that_are_broken_addresses_are_malformed(host: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_sip_uri(f"sip:5001@{host}:5060")
    assert not is_ip_literal(host)


@pytest.mark.parametrize(("host", "literal"), [("10.0.0.1", True), ("[2001:db8::1]", True),
                                               ("pbx.example", False), ("pbx-1", False)])
def test_sip_uri_hosts_that_parse(host: str, literal: bool) -> None:
    assert parse_sip_uri(f"sip:5001@{host}").host == host.lower()
    assert is_ip_literal(host) is literal


# ------------------------------------------------------------------------------ SDP
def _sdp(conn: str) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 {conn}\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n").encode()


@pytest.mark.parametrize("conn", ["010.0.0.1", "10.0.0.01", "0x0a.0.0.1", "10.1", "1.2.3.4.5",
                                  "256.0.0.1", "224.2.1.1/127", "239.1.1.1",
                                  "255.255.255.255", "pbx.example", "192.0.2.1/1"])
def test_an_sdp_address_the_media_core_could_not_use_is_a_488(conn: str) -> None:
    local = LocalMedia("127.0.0.1", 30000)
    with pytest.raises(RemoteProtocolError) as offer:
        answer_offer(parse_sdp(_sdp(conn)), local)
    assert offer.value.status == 488
    with pytest.raises(RemoteProtocolError) as answer:
        accept_answer(parse_sdp(_sdp(conn)), local)
    assert answer.value.status == 488


def test_an_sdp_media_level_address_is_judged_the_same() -> None:
    body = _sdp("192.0.2.1") + b"c=IN IP4 010.0.0.1\r\n"
    with pytest.raises(RemoteProtocolError) as err:
        parse_sdp(body)
    assert err.value.status == 488


def test_usable_sdp_addresses_reach_the_media_parameters() -> None:
    local = LocalMedia("127.0.0.1", 30000)
    _, params = answer_offer(parse_sdp(_sdp("192.0.2.1")), local)
    assert (params.remote_addr, params.remote_port, params.direction) == \
        ("192.0.2.1", 40000, "sendrecv")
    _, held = answer_offer(parse_sdp(_sdp("0.0.0.0")), local)  # RFC 2543 hold
    assert held.direction == "inactive"
    ours = parse_sdp(build_offer(local).to_bytes())
    assert ours.connection == "127.0.0.1"


# ------------------------------------------------------------------------------ configuration
def _load(tmp_path: Path, sip: dict) -> None:
    doc = {"sip": {"server": "192.0.2.1", "username": "5002", **sip}}
    (tmp_path / "c.yaml").write_text(json.dumps(doc))
    load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize(("key", "value"), [
    ("server", "010.0.0.1"), ("server", "10.0.0"), ("server", "192.168.1.256"),
    ("local_address", "010.0.0.2"), ("local_address", "box.example")])
def test_config_refuses_addresses_libc_would_read_another_way(tmp_path: Path, key: str,
                                                              value: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {key: value})
    assert f"sip.{key}" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("sources", [["0.0.0.0/0"], ["::/0"], ["10.0.0.0/7"],
                                     ["192.168.1.10", "2001:db8::/31"]])
def test_config_refuses_trust_lists_that_trust_everyone(tmp_path: Path,
                                                        sources: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {"trusted_sources": sources})
    assert "sip.trusted_sources" in str(err.value) and "trusts" in str(err.value)


@pytest.mark.parametrize("name", ["", " ", "*.pbx.example", ".pbx.example", "pbx example",
                                  "pbx.example/x", "010.0.0.1", "-pbx.example"])
def test_config_refuses_tls_names_that_would_not_be_a_check(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {"transport": "tls", "tls": {"server_name": name}})
    assert "sip.tls.server_name" in str(err.value)


def test_config_takes_good_hosts_names_and_blocks(tmp_path: Path) -> None:
    _load(tmp_path, {"server": "pbx.example", "local_address": "192.0.2.7",
                     "trusted_sources": ["10.0.0.0/8", "192.0.2.11", "2001:db8::/32"],
                     "transport": "tls", "tls": {"server_name": "pbx.example"}})
    _load(tmp_path, {"server": "10.0.0.1", "transport": "tls",
                     "tls": {"server_name": "10.0.0.1"}})
