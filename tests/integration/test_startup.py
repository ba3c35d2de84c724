"""Start-up failures are one line naming the cause and an exit status, never a traceback:
a second instance, a SIP or RTP port in use, a configuration that cannot be read. Real
processes (``python -m firmware run``) and real sockets on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.box import config as box_config
from devtools.box.process import Intercom
from devtools.loopback import free_port
from devtools.paths import REPO

pytestmark = pytest.mark.integration


def run_intercom(config: Path, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "firmware", "run", "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def write_config(tmp: Path, **sections: dict) -> Path:
    """The box's configuration (``box_config``) with a password that must never be printed,
    for a PBX that is not there."""
    sip = {"password": "secret-never-printed", **sections.pop("sip", {})}
    return box_config.write_config(tmp, free_port(), sip=sip, **sections)


def one_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert "secret-never-printed" not in result.stderr + result.stdout
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("intercom:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_second_instance_is_refused_and_the_first_keeps_its_socket(tmp_path: Path) -> None:
    first = Intercom(tmp_path / "a", free_port()).start()
    try:
        config = write_config(tmp_path, control={"socket": str(first.sock)})
        result = run_intercom(config)
        assert result.returncode == 1
        assert "another intercom is already running" in one_line(result)
        assert first.status()["ok"], "the first instance still answers on its socket"
    finally:
        first.stop()


def test_sip_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = write_config(tmp_path, sip={"local_port": port})
        result = run_intercom(config)
    assert result.returncode == 1
    line = one_line(result)
    assert f"cannot use SIP port 0.0.0.0:{port}/udp (sip.local_port)" in line
    assert "in use" in line


def test_rtp_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = write_config(tmp_path, sip={"local_address": "127.0.0.1"},
                              media={"rtp_port": port, "address": "127.0.0.1"})
        result = run_intercom(config)
    assert result.returncode == 1
    line = one_line(result)
    assert "RTP" in line and str(port) in line and "media.rtp_port" in line


def test_unreadable_config_exits_2(tmp_path: Path) -> None:
    folder = tmp_path / "intercom.yaml"
    folder.mkdir()
    result = run_intercom(folder)
    assert result.returncode == 2
    assert "cannot read configuration: Is a directory" in one_line(result)
