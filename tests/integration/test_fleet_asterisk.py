"""A building from one inventory, end to end: `intercom-fleet build` writes a 3-box fleet, the
real Asterisk 22 loads pbx/ with the generated files #included, a real `intercom run` starts
from one generated per-box YAML (only the test's own keys changed: loopback ports, mock GPIO,
control socket) and registers with the generated password; its buttons ring the inventory's
targets through the generated dial plan, and a phone reaches the box through it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import asterisk as asterisk_peer
from devtools.asterisk import Asterisk
from devtools.baresip import Baresip
from devtools.box.process import Intercom
from devtools.paths import REPO
from devtools.waiting import wait_for
from firmware.config import read_yaml

pytestmark = pytest.mark.integration

FLAT_PASSWORD = "flat-5101-test-only-password"
INVENTORY = """\
mac,name,extension,buttons,door_code
b8:27:eb:20:00:01,entrance-a,5201,call=5101 flat2@24=5102,24681357
b8:27:eb:20:00:02,entrance-b,5202,call=5001,
dc:a6:32:20:00:03,garage,5203,talk=5101,-
"""


def fleet(tmp: Path, pbx_port: int) -> Path:
    (tmp / "inventory.csv").write_text(INVENTORY)
    r = subprocess.run([sys.executable, "-m", "firmware.fleet", "build",
                        str(tmp / "inventory.csv"), "--out", str(tmp / "fleet"),
                        "--pbx-host", "127.0.0.1", "--pbx-port", str(pbx_port)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return tmp / "fleet"


def include_fleet(pbx: Asterisk, out: Path) -> None:
    """pbx/ as the tests run it (devtools.asterisk.Asterisk), plus the generated files #included at
    the end, as an installer does, and one flat's phone (5101) the inventory's buttons call."""
    etc = pbx.dir / "etc"
    for f in (out / "pbx").iterdir():
        (etc / f.name).write_text(f.read_text())
    (etc / "pjsip_flats.conf").write_text(
        "[5101](phone-endpoint)\nauth=5101\naors=5101\n\n"
        f"[5101](phone-auth)\nusername=5101\npassword={FLAT_PASSWORD}\n\n[5101](phone-aor)\n")
    with open(etc / "pjsip.conf", "a") as f:
        f.write("\n#include pjsip_flats.conf\n#include pjsip_fleet.conf\n")
    with open(etc / "extensions.conf", "a") as f:
        f.write("\n#include extensions_fleet.conf\n")


@pytest.fixture
def building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pbx = Asterisk()
    out = fleet(tmp_path, pbx.port)
    include_fleet(pbx, out)
    monkeypatch.setitem(asterisk_peer.PASSWORDS, "5101", FLAT_PASSWORD)
    started: list = []
    try:
        pbx.start()
        yield pbx, out, started
    finally:
        for peer in started:
            peer.stop()
        pbx.cleanup()


def box_from(out: Path, mac: str, tmp: Path, asterisk: Asterisk) -> Intercom:
    """The generated file as the box would load it; only what a test must own changes."""
    box = Intercom(tmp, asterisk.port)  # the harness: ports, control socket, log
    doc, _ = read_yaml((out / "www" / f"{mac}.yaml").read_text())
    doc["sip"].update(local_port=box.sip_port, register_expires=60, retry_min=1, retry_max=4)
    doc.update(control={"socket": str(box.sock)}, media={"rtp_port": 0},
               log={"level": "info"})
    doc["gpio"]["pin_factory"] = "mock"
    box.config.write_text(json.dumps(doc))  # JSON is YAML
    return box


def test_a_generated_box_registers_and_calls_the_inventory_targets(building,
                                                                    tmp_path: Path) -> None:
    asterisk, out, started = building
    endpoints = asterisk.rx("pjsip show endpoints")
    assert all(e in endpoints for e in ("5201", "5202", "5203"))
    box = box_from(out, "b827eb200001", tmp_path / "box", asterisk)
    started.append(box)
    box.start()
    wait_for(lambda: asterisk.registered("5201"), 15, 0.2, "box 5201 registered in Asterisk")
    st = box.wait_state("idle")
    assert st["registered"] is True, st
    phone = Baresip(asterisk, "5101", tmp=tmp_path / "flat1")
    started.append(phone)
    phone.start()

    # the call button rings the flat the inventory names, through [door-fleet]
    assert box.cmd("press", "call")["ok"]
    phone.wait_event("CALL_INCOMING", 10)
    assert box.wait_state("calling")["state"] == "calling"
    phone.command("accept")
    phone.wait_event("CALL_ESTABLISHED", 10)
    box.wait_state("in_call")
    phone.command("hangup")
    box.wait_state("idle")

    # flat2 (a new button on pin 24) dials 5102: routed by the generated dial plan to an
    # endpoint that does not exist, so Asterisk refuses with 480, not 404 "no such extension"
    assert box.cmd("press", "flat2")["ok"]
    st = box.wait_state("idle", 15)
    assert "480" in st["last_call_end"], st["last_call_end"]

    # the flat's phone reaches the box through [fleet-boxes], included into [intercom]
    phone.command("dial", f"sip:5201@127.0.0.1:{asterisk.port}")
    assert box.wait_state("ringing", 10)["state"] == "ringing"
    phone.command("hangup")
    box.wait_state("idle")
    assert "24681357" not in box.log()
