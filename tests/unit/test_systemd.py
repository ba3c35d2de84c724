"""The shipped systemd unit and the sd_notify client."""

from __future__ import annotations

import configparser
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from firmware.systemd import Notifier

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "intercom.service"


def test_unit_has_the_appliance_settings() -> None:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(UNIT)
    svc = cp["Service"]
    assert svc["Type"] == "notify" and svc["Restart"] == "always"
    assert int(svc["WatchdogSec"]) > 0
    assert svc["User"] == "intercom" and set(svc["SupplementaryGroups"].split()) >= {"gpio",
                                                                                       "audio"}
    assert "CAP_SYS_NICE" in svc["AmbientCapabilities"] and svc["LimitRTPRIO"]
    assert svc["RuntimeDirectory"] == "intercom"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_verifies() -> None:
    r = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if line.strip() and "/usr/bin/intercom is not executable" not in line]
    assert problems == []


def test_notifier(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(path))
        n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000"})
        assert n.enabled and n.watchdog_interval == 2.0
        assert n.ready("idle") and n.watchdog() and n.status("x") and n.stopping()
        got = [rx.recv(100).decode() for _ in range(4)]
    assert got == ["READY=1\nSTATUS=idle", "WATCHDOG=1", "STATUS=x", "STOPPING=1"]
    off = Notifier({})
    assert not off.enabled and not off.ready("x") and off.watchdog_interval is None
    assert Notifier({"NOTIFY_SOCKET": "@abstract-x"}).address == "\0abstract-x"
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")}).watchdog()
