"""The transport table and what the user agent and the configuration take from it."""

from __future__ import annotations

import pytest

from firmware.config import ConfigError, parse_config
from firmware.sip.message import Request, parse_message
from firmware.sip.transport import TRANSPORTS, transport
from firmware.sip.ua import RegState, UAConfig, UserAgent


def test_table() -> None:
    assert [(t.name, t.reliable, t.via, t.uri_param, t.default_port, t.secure)
            for t in TRANSPORTS.values()] == [
        ("udp", False, "UDP", None, 5060, False), ("tcp", True, "TCP", "tcp", 5060, False),
        ("tls", True, "TLS", "tls", 5061, True)]
    assert transport("TLS") is TRANSPORTS["tls"]
    with pytest.raises(ValueError, match="sctp"):
        transport("sctp")


def test_user_agent_over_tls_before_and_after_connecting() -> None:
    ua = UserAgent(UAConfig(server="127.0.0.1", port=5061, username="5002", transport="tls",
                            keepalive_interval=10), ("127.0.0.1", 0))
    ua.start(0.0)
    req = parse_message(ua.datagrams_to_send()[0][0])
    assert isinstance(req, Request) and req.uri == "sip:127.0.0.1", "5061 is TLS's default"
    assert req.headers.get("Via", "").startswith("SIP/2.0/TLS 127.0.0.1;rport;branch=")
    assert req.headers.get("Contact") == "<sip:5002@127.0.0.1;transport=tls>"
    ua.contact_addr = ("127.0.0.1", 40123)  # connected
    ua.transport_restored(1.0)
    req = parse_message(ua.datagrams_to_send()[0][0])
    assert req.headers.get("Contact") == "<sip:5002@127.0.0.1:40123;transport=tls>"
    assert ua.get_timer() is not None and ua.reliable


def test_lost_connection_is_a_lost_registration() -> None:
    ua = UserAgent(UAConfig(server="127.0.0.1", port=5061, username="5002", transport="tls",
                            keepalive="off", retry_min=5), ("127.0.0.1", 4000))
    ua.reg.state, ua.reg.granted = RegState.REGISTERED, 300
    ua.connection_lost(10.0, "TLS connection closed")
    assert not ua.registered
    assert ua.reg.last_error == "connection to the registrar lost: TLS connection closed"
    assert ua.get_timer() == 15.0


def test_tls_config() -> None:
    cfg = parse_config("sip: {server: pbx.lan, username: '5002', transport: tls,\n"
                       "      tls: {verify: false, server_name: pbx.example}}\n")
    assert cfg.sip.port == 5061 and cfg.sip.tls.verify is False
    assert cfg.sip.tls.server_name == "pbx.example" and cfg.sip.tls.ca_file is None
    assert parse_config("sip: {server: a, username: b, transport: tls, port: 5071}").sip.port \
        == 5071
    for bad, needle in (
            ("tls: {ca_file: /nonexistent/ca.pem}", "sip.tls.ca_file (line 2): no such file"),
            ("tls: {verfy: true}", "unknown key sip.tls.verfy (line 2); did you mean 'verify'"),
            ("tls: {verify: 'no'}", "sip.tls.verify (line 2) must be bool"),
            ("tls: {cert_file: /etc/hostname}", "cert_file and sip.tls.key_file go together")):
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            parse_config(f"sip:\n  {bad}\n  server: a\n  username: b\n  transport: tls\n")
