"""The host firewall's rules as data: who is admitted to which port, the registrar file as an
input that is checked, and a configuration that cannot be read admitting nobody. (The rules
loaded into a real kernel: tests/integration/test_firewall.py.)"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from firmware import firewall as fw
from firmware import provisioning_io as pio
from firmware.config import load_boot, parse_config
from firmware.provisioning import CACHE_NAME, digest

BASE = "sip: {server: 192.0.2.10, username: '5002', trusted_sources: [198.51.100.0/24, fd00::5]}\n"


def test_sources_are_the_registrar_and_the_trusted_sources() -> None:
    spec = fw.spec_from_config(parse_config(BASE), ["203.0.113.7"])
    assert [str(n) for n in spec.sources] == ["203.0.113.7/32", "198.51.100.0/24",
                                              "fd00::5/128", "192.0.2.10/32"]
    assert spec.sip_port == 5070 and spec.rtp_ports == (10000, 10001)
    rules = fw.ruleset(spec)
    assert "elements = { 203.0.113.7/32, 198.51.100.0/24, 192.0.2.10/32 }" in rules
    assert "elements = { fd00::5/128 }" in rules
    assert "policy drop;" in rules
    assert "ip saddr @sources_v4 udp dport { 5070, 10000-10001 } accept" in rules
    assert "tcp dport 22" not in rules, "SSH only when the boot partition enables it"
    assert "tcp dport 22 accept" in fw.ruleset(fw.FirewallSpec(ssh=True))


def test_a_name_as_server_waits_for_the_registrar_file() -> None:
    cfg = parse_config("sip: {server: pbx.example, username: '5002'}\n"
                       "media: {rtp_port: 0}\n")
    spec = fw.spec_from_config(cfg)
    assert spec.sources == () and spec.rtp_ports == fw.RANDOM_RTP
    assert "elements" not in fw.ruleset(spec)


def test_tcp_and_tls_need_no_inbound_sip_port() -> None:
    cfg = parse_config("sip: {server: 192.0.2.10, username: '5002', transport: tls}\n")
    spec = fw.spec_from_config(cfg)
    assert spec.sip_port is None
    assert "udp dport { 10000-10001 }" in fw.ruleset(spec)


def test_any_port_when_the_box_picks_its_ports() -> None:
    cfg = parse_config("sip: {server: 192.0.2.10, username: '5002', local_port: 0}\n")
    rules = fw.ruleset(fw.spec_from_config(cfg))
    assert "ip saddr @sources_v4 meta l4proto udp accept" in rules


def test_an_unreadable_configuration_admits_nobody() -> None:
    spec = fw.spec_from_config(None, ["192.0.2.1"])
    assert spec.sources == ()


@pytest.mark.parametrize("data, problem", [
    (b"192.0.2.1\n::1\n", None),
    (b"", None),
    (b"192.0.2.1; flush ruleset\n", "line 1 is not an IP address"),
    (b"0.0.0.0\n", "not a host address"),
    (b"224.0.0.1\n", "not a host address"),
    (b"10.0.0.0/8\n", "not an IP address"),
    (b"\xff\n", "not ASCII"),
    (b"".join(b"192.0.2.%d\n" % i for i in range(17)), "more than 16"),
    (b"1" * 5000, "larger than"),
])
def test_the_registrar_file_is_checked(tmp_path: Path, data: bytes, problem: str | None) -> None:
    (tmp_path / fw.REGISTRAR_FILE).write_bytes(data)
    addresses, why = fw.read_registrar(tmp_path)
    if problem is None:
        assert why is None and addresses == [a.decode() for a in data.split()]
    else:
        assert why is not None and problem in why and addresses == []


def test_write_registrar_only_when_it_changed(tmp_path: Path) -> None:
    assert fw.write_registrar(tmp_path, ["192.0.2.1", "192.0.2.2"])
    assert not fw.write_registrar(tmp_path, ["192.0.2.1", "192.0.2.2"])
    assert fw.read_registrar(tmp_path) == (["192.0.2.1", "192.0.2.2"], None)
    assert fw.write_registrar(tmp_path, ["192.0.2.3"])
    assert not list(tmp_path.glob(".*"))


def test_the_command_prints_a_closed_ruleset_for_a_bad_config(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture
                                                               ) -> None:
    bad = tmp_path / "intercom.yaml"
    bad.write_text("sip: {server: 192.0.2.10}\n")  # no username
    (tmp_path / fw.REGISTRAR_FILE).write_text("192.0.2.10\n")
    assert fw.main(["--config", str(bad), "--runtime", str(tmp_path), "--ssh", "no"]) == 1
    out = capsys.readouterr()
    assert "admitting no SIP or RTP source" in out.err
    assert "elements" not in out.out and "policy drop" in out.out


def test_sources_are_networks() -> None:
    assert all(isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network)
               for n in fw.spec_from_config(parse_config(BASE)).sources)


# --------------------------------------------------------------------- the provisioned trust
CARD = ("sip: {server: pbx.example, username: '5002', trusted_sources: [198.51.100.0/24]}\n"
        "control: {socket: RUNTIME/intercom.sock}\n"
        "provisioning: {url: 'https://prov.example/{mac}.yaml', ca_file: CA, "
        "mac: b8-27-eb-12-34-56}\n")
DOC = b"sip: {trusted_sources: [203.0.113.0/28, fd00::9]}\n"


def _card(tmp_path: Path, text: str = CARD) -> Path:
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "run").mkdir(exist_ok=True)
    f = tmp_path / "intercom.yaml"
    f.write_text(text.replace("RUNTIME", str(tmp_path / "run"))
                 .replace("CA", str(tmp_path / "ca.crt")))
    return f


def test_the_trust_follows_the_provisioned_configuration(tmp_path: Path) -> None:
    boot = load_boot(_card(tmp_path))
    data = tmp_path / "data"
    data.mkdir()
    cfg, source = fw.running_config(boot, data)
    assert cfg is boot.config and source == str(tmp_path / "intercom.yaml"), "nothing kept yet"
    pio.save_cache(data / "provisioning", CACHE_NAME, DOC, None)
    cfg, source = fw.running_config(boot, data)
    assert cfg is not None and cfg.sip.trusted_sources == ("203.0.113.0/28", "fd00::9")
    assert source == f"the provisioned configuration {digest(DOC)} in {data / 'provisioning'}"
    rules = fw.ruleset(fw.spec_from_config(cfg, ["192.0.2.7"]))
    assert "elements = { 192.0.2.7/32, 203.0.113.0/28 }" in rules, "the card's list replaced"
    assert "198.51.100.0" not in rules


def test_the_cache_in_ram_when_the_data_partition_has_none(tmp_path: Path) -> None:
    boot = load_boot(_card(tmp_path))
    pio.save_cache(tmp_path / "run" / "provisioning", CACHE_NAME, DOC, None)
    cfg, _ = fw.running_config(boot, tmp_path / "data-without-cache")
    assert cfg is not None and "203.0.113.0/28" in cfg.sip.trusted_sources
    cfg, _ = fw.running_config(boot, None)
    assert cfg is not None and "203.0.113.0/28" in cfg.sip.trusted_sources


def test_a_bad_cache_falls_back_to_the_card_in_one_line(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    boot = load_boot(_card(tmp_path))
    folder = tmp_path / "data" / "provisioning"
    pio.save_cache(folder, CACHE_NAME, DOC, None)
    f = folder / CACHE_NAME
    f.write_bytes(f.read_bytes().replace(b"203.0.113.0/28", b"0.0.0.0/0\x20\x20\x20\x20\x20"))
    cfg, _ = fw.running_config(boot, tmp_path / "data")
    assert cfg is boot.config
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"intercom-firewall: {f} ignored: the checksum does not match (damaged or "
                   "partly written)"]
    # valid as a file, invalid as a configuration: refused like the intercom refuses it
    pio.save_cache(folder, CACHE_NAME, b"sip: {trusted_sources: [not-a-network]}\n", None)
    cfg, _ = fw.running_config(boot, tmp_path / "data")
    assert cfg is boot.config


def test_a_card_that_leaves_sip_to_the_server_admits_nobody_until_a_document_is_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lean = CARD.replace("server: pbx.example, username: '5002', ", "")
    config = _card(tmp_path, lean)
    args = ["--config", str(config), "--runtime", str(tmp_path / "run"), "--ssh", "no",
            "--data", str(tmp_path / "data")]
    assert fw.main(args) == 0
    out = capsys.readouterr()
    assert "no provisioned configuration is kept yet: admitting no SIP" in out.err
    assert "elements" not in out.out
    pio.save_cache(tmp_path / "data" / "provisioning", CACHE_NAME,
                   b"sip: {server: 192.0.2.10, username: '5002'}\n", None)
    assert fw.main(args) == 0
    out = capsys.readouterr()
    assert "elements = { 198.51.100.0/24, 192.0.2.10/32 }" in out.out
    assert "trust from the provisioned configuration" in out.err
