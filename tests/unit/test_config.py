"""Configuration: the schema, errors that name key and line, secrets kept out of reprs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from firmware.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
MINIMAL = "sip:\n  server: pbx.local\n  username: 5002\n  password: s3cret\n"


def test_minimal_config_and_defaults() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.sip.server == "pbx.local" and cfg.sip.username == "5002"
    assert cfg.sip.port == 5060 and cfg.sip.transport == "udp"
    assert cfg.calls.ring_timeout == 30 and cfg.media.codecs == ("PCMU", "PCMA")
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg)


def test_example_config_is_valid_and_documents_every_key() -> None:
    from firmware.config import SCHEMA

    text = (REPO / "examples" / "intercom.yaml").read_text()
    cfg = parse_config(text)
    assert cfg.sip.username == "5002"
    for section, keys in SCHEMA.items():
        for key in keys:
            assert f"  {key}:" in text, f"examples/intercom.yaml lacks {section}.{key}"


@pytest.mark.parametrize("text,needle", [
    (MINIMAL + "  port: 70000\n", "sip.port (line 5) must be a port number"),
    (MINIMAL + "  transport: sctp\n", "sip.transport (line 5) must be one of udp, tcp"),
    (MINIMAL + "  serverr: x\n", "unknown key sip.serverr (line 5); did you mean 'server'?"),
    (MINIMAL + "cals:\n  x: 1\n", "unknown section cals (line 5); did you mean 'calls'?"),
    ("sip:\n  server: a\n", "missing required key sip.username"),
    (MINIMAL + "  register_expires: 5\n", "sip.register_expires (line 5) must be between"),
    (MINIMAL + "  port: '5060'\n", "sip.port (line 5) must be int, got str"),
    (MINIMAL + "  register: 'yes'\n", "sip.register (line 5) must be bool"),
    (MINIMAL + "  port: true\n", "sip.port (line 5) must be int, not a boolean"),
    (MINIMAL + "media:\n  codecs: [G729]\n", "media.codecs (line 6) must be a non-empty list"),
    (MINIMAL + "calls: 5\n", "calls (line 5) must be a mapping"),
    (MINIMAL + "  retry_min: 10\n  retry_max: 5\n", "sip.retry_max (line 6) must not be"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("sip: [\n", "not valid YAML at line"),
    (MINIMAL + "media:\n  dtmf_payload_type: 13\n", "media.dtmf_payload_type (line 6)"),
])
def test_errors_name_key_and_line(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "box.yaml")
    assert needle in str(info.value)
    assert str(info.value).startswith("box.yaml: ")
    assert "s3cret" not in str(info.value)


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="missing required key sip.server"):
        load_config(empty)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "firmware", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=30)


@pytest.mark.compiled  # check-config also asks the build whether it has the echo canceller
def test_check_config_cli_accepts_a_good_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    r = run_cli("check-config", str(good))
    assert r.returncode == 0 and "OK" in r.stdout


def test_check_config_cli_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "  port: nope\n")
    r = run_cli("check-config", str(bad))
    assert r.returncode == 2
    assert "sip.port (line 5) must be int" in r.stderr and "s3cret" not in r.stderr


def test_run_with_bad_config_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    sock = tmp_path / "ctl.sock"
    bad.write_text(MINIMAL + f"  transport: carrier-pigeon\ncontrol:\n  socket: {sock}\n")
    r = run_cli("run", "--config", str(bad))
    assert r.returncode == 2 and "sip.transport (line 5)" in r.stderr
    assert not sock.exists(), "nothing started"


def test_client_commands_without_a_running_intercom(tmp_path: Path) -> None:
    r = run_cli("--socket", str(tmp_path / "none.sock"), "status")
    assert r.returncode == 1 and "cannot reach the intercom" in r.stderr


def test_gpio_profile_overrides_and_errors() -> None:
    cfg = parse_config(MINIMAL + """gpio:
  buttons:
    flat2: {pin: 24, target: "5003"}
    talk: null
  leds:
    error: null
  relay: null
calls:
  default_target: "5010"
  door_code: 1234
""")
    names = {b.name: b for b in cfg.gpio.buttons}
    assert "talk" not in names and names["flat2"].target == "5003"
    assert names["call"].target == "5010", "the call button dials calls.default_target"
    assert "error" not in {led.name for led in cfg.gpio.leds} and cfg.gpio.relay is None
    assert cfg.calls.door_code == "1234" and "1234" not in repr(cfg)
    for text, needle in (
        ("gpio:\n  buttons:\n    x: {pin: 17}\n", "GPIO 17 is used twice"),
        ("gpio:\n  buttons:\n    x: {pin: 40, action: open}\n", "action must be call"),
        ("gpio:\n  buttons:\n    x: {pin: 40, colour: red}\n", "unknown key gpio.buttons.x"),
        ("gpio:\n  buttons:\n    x: {pin: 99}\n", "BCM GPIO number"),
        ("gpio:\n  profile: nosuch\n", "gpio.profile 'nosuch' not found (known: plain)"),
        ("gpio:\n  pin_factory: magic\n", "gpio.pin_factory (line 6) must be one of"),
        ("calls:\n  door_code: '*1x'\n", "calls.door_code (line 6) may only contain"),
    ):
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            parse_config(MINIMAL + text)


def test_config_takes_transport_names_ports_and_srtp_from_the_transport_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The table in firmware/sip/transport.py is the one list: an entry added there is a valid
    sip.transport with its default port and SRTP default, and nothing else names them."""
    from firmware.sip.transport import TRANSPORTS, Transport

    for name, t in TRANSPORTS.items():
        cfg = parse_config(f"sip: {{server: a, username: b, transport: {name}}}\n")
        assert cfg.sip.port == t.default_port
        assert cfg.media.srtp == ("required" if t.secure else "off")
    with pytest.raises(ConfigError, match="sip.transport .*must be one of udp, tcp, tls$"):
        parse_config("sip: {server: a, username: b, transport: sctp}\n")
    monkeypatch.setitem(TRANSPORTS, "wss", Transport("wss", True, "WSS", "ws", 8089, True,
                                                     False, "SIPS+D2W", "_sips._ws"))
    cfg = parse_config("sip: {server: a, username: b, transport: wss}\n")
    assert (cfg.sip.transport, cfg.sip.port, cfg.media.srtp) == ("wss", 8089, "required")
