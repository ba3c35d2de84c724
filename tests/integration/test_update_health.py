"""The health check and RAUC's pre-install handler against the real things on this host: the
intercom as a process registering with Asterisk 22 (its control socket), RAUC 1.8's D-Bus
service with the box's ``uboot`` backend, the boot script's two redundant env files written by
the real fw_setenv (devtools.rauc_host), a real ``rauc install`` of a signed bundle (plain
format: this host has no device-mapper for verity), and ``intercom health`` as a process.

Stand-ins: U-Boot's choice at a boot (RaucHost.boot applies the script's rule with fw_setenv;
the script itself runs in the QEMU tests) and ``systemctl`` (no systemd here: ``show`` answers
what the test says the intercom's unit is, ``reboot`` is recorded). The bounds are shortened
with the command's overrides (4 s to register, 8 s of PBX silence, 2 s to settle).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import bundles
from devtools.box.process import Intercom
from devtools.loopback import free_port
from devtools.rauc_host import RaucHost
from devtools.waiting import wait_for
from firmware.update import health
from firmware.update.state import Store

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "images/overlay/usr/lib/intercom/update-pre-install"
TRIAL = {"slot": "B", "version": "1.2.0", "from_slot": "A", "from_version": "1.1.0",
         "installed_at": 1000.0, "inconclusive": 0}


@pytest.fixture
def host(tmp_path: Path) -> Iterator[RaucHost]:
    rauc = RaucHost(tmp_path / "rauc")
    yield rauc
    rauc.stop()


def health_check(host: RaucHost, box: Intercom, state: Path,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``intercom health`` as intercom-health.service runs it, with short bounds."""
    return subprocess.run(
        [sys.executable, "-m", "firmware", "health", "--config", str(box.config), "--socket",
         str(box.sock), "--state-dir", str(state), "--cmdline", str(host.cmdline), "--poll",
         "0.3", "--register-timeout", "4", "--pbx-silence", "8", "--settle", "2"],
        capture_output=True, text=True, cwd=REPO, env=host.env, timeout=timeout)


def as_after_install(host: RaucHost, store: Store) -> None:
    """What a finished install leaves: B first with 3 attempts (RAUC), trial.json (U1)."""
    host.setenv("BOOT_ORDER", "B A")
    host.setenv("BOOT_B_LEFT", "3")
    store.write_trial(TRIAL)


def test_the_pre_install_handler_refuses_while_ringing_and_lets_an_idle_install_through(
        asterisk, intercom, baresip, tmp_path: Path) -> None:
    phone = baresip("5001")
    box = intercom()
    box.wait_state("idle")
    key, cert = bundles.make_key_pair(tmp_path / "keys", "intercom test")
    root = tmp_path / "root.ext4"
    with root.open("wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(root)], check=True)
    bundle = bundles.make_bundle(root, tmp_path / "v2.raucb", "1.2.0", key, cert, fmt="plain")
    # RAUC runs the shipped handler as it is (/usr/bin/python3), with the firmware importable
    # and the box's configuration named as intercom.service names it on the image
    host = RaucHost(tmp_path / "rauc", keyring=cert, handler=HANDLER,
                    env={"PYTHONPATH": str(REPO), "INTERCOM_CONFIG": str(box.config)})
    try:
        host.boot()
        phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
        box.wait_state("ringing")
        refused = host.rauc("install", str(bundle))
        assert refused.returncode != 0, refused.stdout
        assert "Pre-install handler error" in refused.stdout + refused.stderr
        assert "# intercom pre-install: refusing to install now: the intercom is ringing" in \
            host.service_log()
        assert host.printenv()["BOOT_ORDER"] == "A B", "nothing changed"
        assert bundles.read_file(host.slots["B"], "/etc/intercom-version") is None
        assert box.cmd("hangup")["ok"]
        box.wait_state("idle")
        done = host.rauc("install", str(bundle))
        assert done.returncode == 0, done.stdout + done.stderr
        assert host.printenv() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "3"}
        assert bundles.read_file(host.slots["B"], "/etc/intercom-version") == b"1.2.0\n"
    finally:
        host.stop()


def test_a_trial_boot_that_registers_is_marked_good(asterisk, intercom, host: RaucHost,
                                                    tmp_path: Path) -> None:
    state = tmp_path / "update"
    store = Store(state)
    as_after_install(host, store)
    assert host.boot() == "B" and host.printenv()["BOOT_B_LEFT"] == "2"
    box = intercom(update={"state_dir": str(state)})
    box.wait_state("idle")
    done = health_check(host, box, state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intercom health: 1.2.0 (slot B) is good: registered with the PBX" in done.stdout
    assert host.printenv() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}
    last = store.read()["last"]
    assert (last["result"], last["version"]) == ("ok", "1.2.0")
    assert store.read_trial() is None and host.reboots() == 0


def test_a_trial_the_pbx_refuses_is_marked_bad_rolled_back_refused_and_shown(
        asterisk, intercom, host: RaucHost, tmp_path: Path) -> None:
    state = tmp_path / "update"
    store = Store(state)
    as_after_install(host, store)
    host.boot()
    new = intercom(password="not the password", update={"state_dir": str(state)})
    wait_for(lambda: new.status().get("registrar_answer") in (401, 403), 15, 0.2,
             "Asterisk refusing the password")
    done = health_check(host, new, state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("intercom health: 1.2.0 (slot B) failed: the PBX answered but it did not register "
            "within 4 s: marking slot B bad and rebooting into slot A (1.1.0)") in done.stdout
    assert host.printenv() == {"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
    assert host.reboots() == 1
    record = json.loads((state / health.RECORD).read_text())
    assert record["failure"]["reason"] == "register"
    new.stop()

    assert host.boot() == "A"
    old = intercom(update={"state_dir": str(state)})
    old.wait_state("idle")
    assert old.status()["leds"]["error"] == "off"
    done = health_check(host, old, state)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("intercom health: ")]
    assert lines[1] == ("intercom health: rolled back from 1.2.0 to 1.1.0: 1.2.0 (slot B) "
                        "failed: the PBX answered but it did not register within 4 s"), lines
    assert lines[2].startswith("intercom health: 1.2.0 will not be installed again: 1.1.0 "
                               "registered"), lines
    assert lines[3].startswith("intercom health: slot A is good"), lines
    assert host.printenv() == {"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
    st = store.read()
    assert st["refused_versions"] == ["1.2.0"] and st["last"]["result"] == "rolled_back"
    assert host.reboots() == 1 and store.read_trial() is None
    # the running intercom shows it: the error LED blinks although all is well, status says why
    status = wait_for(lambda: (s := old.status())["leds"]["error"] == "blinking" and s, 15,
                      0.3, "the error LED")
    assert status["registered"] and status["update"]["last"]["result"] == "rolled_back"
    ack = subprocess.run([sys.executable, "-m", "firmware", "update", "--ack", "--config",
                          str(old.config)], capture_output=True, text=True, cwd=REPO,
                         timeout=30)
    assert ack.returncode == 0 and ack.stdout.startswith("intercom: acknowledged: rolled back"), \
        ack.stdout + ack.stderr
    wait_for(lambda: old.status()["leds"]["error"] == "off", 15, 0.3, "the LED off after --ack")


def test_a_trial_with_a_silent_pbx_uses_one_boot_attempt_without_marking_bad(
        host: RaucHost, tmp_path: Path) -> None:
    state = tmp_path / "update"
    store = Store(state)
    as_after_install(host, store)
    host.boot()
    box = Intercom(tmp_path / "box", free_port(), t1=0.1, t2=0.4, t4=0.5,  # 6.4 s timeout
                   update={"state_dir": str(state)}).start()
    try:  # nothing listens on the PBX's port: no answer at all
        wait_for(lambda: box.status().get("last_error"), 15, 0.2, "a failed registration")
        assert box.status()["registrar_answer"] is None
        done = health_check(host, box, state)
    finally:
        box.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"intercom health: 1\.2\.0 \(slot B\): no answer from the PBX for \d+ s: "
                     r"rebooting, which uses one of the slot's boot attempts", done.stdout)
    assert host.printenv() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2"}
    assert host.reboots() == 1 and store.read_trial() is not None
    record = json.loads((state / health.RECORD).read_text())
    assert record["failure"]["reason"] == "pbx-silent"
