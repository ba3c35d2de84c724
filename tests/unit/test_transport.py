"""The transport table, what the user agent and the configuration take from it, and the one
adapter per transport (firmware/net.py) with its own set-up errors."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from devtools.waiting import run_apart
from firmware import net
from firmware.config import ConfigError, SipSettings, TlsSettings, parse_config
from firmware.sip.message import Request, parse_message
from firmware.sip.transport import TRANSPORTS, transport
from firmware.sip.ua import RegState, UAConfig, UserAgent


def test_table() -> None:
    assert [(t.name, t.reliable, t.via, t.uri_param, t.default_port, t.secure, t.listens)
            for t in TRANSPORTS.values()] == [
        ("udp", False, "UDP", None, 5060, False, True),
        ("tcp", True, "TCP", "tcp", 5060, False, False),
        ("tls", True, "TLS", "tls", 5061, True, False)]
    assert transport("TLS") is TRANSPORTS["tls"]
    with pytest.raises(ValueError, match="sctp"):
        transport("sctp")


def test_one_adapter_per_transport_and_nothing_else_names_them() -> None:
    """A transport is its table entry and its adapter: no other module lists the names."""
    assert list(net.ADAPTERS) == list(TRANSPORTS)
    assert [a.name for a in net.ADAPTERS.values() if hasattr(a, "name")] == ["TCP", "TLS"]
    firmware = Path(net.__file__).parent
    for path in firmware.rglob("*.py"):
        if path.name == "transport.py" and path.parent.name == "sip":
            continue
        text = path.read_text()
        for names in (('"udp", "tcp"', '"tcp", "tls"', '"udp", "tls"')):
            assert names not in text, f"{path} lists transport names: {names}"
        assert "TRANSPORTS = " not in text, path
        assert not re.search(r'transport\s*(==|!=|in)\s*\(?"', text), \
            f"{path} compares a transport with a name: ask the table (secure, listens, ...)"


def _sip(transport: str, **kw: object) -> SipSettings:
    return SipSettings(server="127.0.0.1", username="5002", transport=transport, **kw)


_run = run_apart


def test_adapters_word_their_own_set_up_errors(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(net.TransportUnusableError) as udp:
            _run(net.open_transport(_sip("udp", local_port=port), ("127.0.0.1", 5060),
                                    "127.0.0.1"))
    assert str(udp.value).startswith(f"cannot use SIP port 127.0.0.1:{port}/udp "
                                     "(sip.local_port): "), udp.value
    assert "in use" in str(udp.value)
    missing = str(tmp_path / "box.pem")
    tls = TlsSettings(cert_file=missing, key_file=missing)
    with pytest.raises(net.TransportUnusableError,
                       match="^cannot set up SIP over TLS: .*No such file"):
        _run(net.open_transport(_sip("tls", tls=tls), ("127.0.0.1", 5061), "127.0.0.1"))


def test_stream_adapters_open_without_connecting() -> None:
    async def opened(name: str) -> net.Adapter:
        return await net.open_transport(_sip(name), ("127.0.0.1", 5061), "127.0.0.1")

    tcp, tls = _run(opened("tcp")), _run(opened("tls"))
    assert type(tcp) is net.TcpTransport and type(tls) is net.TlsTransport
    assert tcp.transport is None and tls.transport is None and tls.ssl.check_hostname


def test_tls_checks_each_server_against_its_own_name() -> None:
    """The name handed to the TLS handshake follows the server the connection goes to (a
    failover: the secondary's own name); ``sip.tls.server_name`` fixes one for all."""
    from types import SimpleNamespace

    from firmware.sip.targets import Target

    one = Target("127.0.0.11", 5061, "pbx1.pbx.test", "SRV", "pbx.test")
    two = Target("127.0.0.12", 5061, "pbx2.pbx.test", "SRV", "pbx.test")
    ua = UserAgent(UAConfig(server=one.host, port=5061, username="5002", transport="tls"),
                   ("127.0.0.1", 0))
    ua.use_targets([one, two], 0.0)
    for fixed, names in ((None, ["pbx1.pbx.test", "pbx2.pbx.test"]),
                         ("pbx.test", ["pbx.test", "pbx.test"])):
        tls = _run(net.open_transport(_sip("tls", tls=TlsSettings(server_name=fixed)),
                                      one.addr, "127.0.0.1"))
        assert isinstance(tls, net.TlsTransport)
        tls.driver = SimpleNamespace(ua=ua)  # type: ignore[assignment]
        seen = []
        for target in (one, two):
            tls.server = target.addr
            seen.append(tls._connect_options(target.addr)["server_hostname"])
        assert seen == names


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
