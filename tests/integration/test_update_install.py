"""The update flow (firmware.update.installer) around a real running intercom (``python -m
firmware run`` registered with the real Asterisk 22, asked through its control socket), real
bundles (devtools/bundles.py) checked by the real ``rauc info``, and the real HTTPS server of
test_update_download. What this host cannot do is stood in for by a recorder: ``rauc install``
(no slots here; the image's QEMU test runs it) and ``systemctl reboot``. Slot facts come from
files in the test's folder (the kernel command line, /etc/intercom-version, system.conf).

A call in progress holds the install back and idle lets it go; the reboot waits for the end of
a call and for the PBX; an intercom that does not answer is in no call; the pull loop fetches,
installs and reboots, then fetches nothing while the bundle is unchanged; refusals are recorded
for ``status`` and a refused bundle is not downloaded again, a damaged one is; ``intercom
update`` on a host without A/B slots says so in one line."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools import bundles
from devtools.asterisk import Asterisk
from devtools.box.process import Intercom
from devtools.paths import REPO
from devtools.waiting import wait_for
from firmware.config import UpdateSettings
from firmware.update import bundle as b
from firmware.update.installer import DOWN_GRACE, Updater, ask_intercom
from firmware.update.slots import SlotPaths
from firmware.update.state import Store, UpdateError

from .test_bundles import keys, root_ext4  # noqa: F401 - the bundle maker's own fixtures
from .test_update_download import BundleServer, pki  # noqa: F401 - the HTTPS server and CA

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, root_ext4: Path,  # noqa: F811
         keys: dict[str, tuple[Path, Path]]) -> dict[str, Path]:  # noqa: F811
    out = tmp_path_factory.mktemp("install-bundles")
    key, cert = keys["ours"]
    v3 = bundles.make_bundle(root_ext4, out / "v3.raucb", "0.3.0", key, cert)
    return {"v3": v3, "old": bundles.make_bundle(root_ext4, out / "v1.raucb", "0.1.0", key,
                                                 cert),
            "tampered": bundles.tamper(v3, out / "tampered.raucb"), "keyring": cert}


def slot_files(tmp: Path, slot: str = "A", version: str = "0.2.0") -> SlotPaths:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "cmdline").write_text(f"console=ttyS1 root=PARTUUID=1c0ffee0-02 ro rauc.slot={slot}\n")
    (tmp / "intercom-version").write_text(f"{version}\n")
    (tmp / "system.conf").write_text(f"[system]\ncompatible=intercom-rpi-arm64\n"
                                     f"data-directory={tmp}\n")
    return SlotPaths(cmdline=tmp / "cmdline", version=tmp / "intercom-version",
                     system_conf=tmp / "system.conf")


class Recorder:
    """Stands in for ``rauc install`` and ``systemctl reboot``; notes what the intercom was
    doing at the moment of the install."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.installs: list[tuple[Path, bool, str]] = []
        self.reboots = 0

    def install(self, path: Path, force: bool) -> subprocess.CompletedProcess[str]:
        self.installs.append((path, force, ask_intercom(self.socket_path).state))
        return subprocess.CompletedProcess(["rauc", "install"], 0, "Installing succeeded\n", "")

    def reboot(self) -> None:
        self.reboots += 1


def updater(tmp: Path, socket_path: str, keyring: Path, **extra: Any) -> tuple[Updater, Recorder]:
    rec = Recorder(socket_path)
    settings = UpdateSettings(state_dir=str(tmp / "update"), keyring=str(keyring),
                              **extra.pop("settings", {}))
    paths = extra.pop("paths", None) or slot_files(tmp / "box")
    up = Updater(settings, socket_path, paths=paths, install=extra.pop("install", rec.install),
                 reboot=rec.reboot, poll=0.1, **extra)
    return up, rec


@pytest.fixture
def box(asterisk: Asterisk, tmp_path: Path) -> Iterator[Intercom]:
    """The real intercom, its status reading the test's update state folder."""
    ic = Intercom(tmp_path / "intercom", asterisk.port)
    doc = json.loads(ic.config.read_text())
    doc["update"] = {"state_dir": str(tmp_path / "update")}
    ic.config.write_text(json.dumps(doc))
    ic.start()
    try:
        wait_for(lambda: ic.status().get("registered"), 20, 0.2, "registered")
        yield ic
    finally:
        ic.stop()


def test_a_call_holds_the_install_and_the_reboot_back(box: Intercom, made: dict[str, Path],
                                                      tmp_path: Path) -> None:
    up, rec = updater(tmp_path, str(box.sock), made["keyring"], say=(lines := []).append)
    assert box.cmd("call", "600")["ok"]
    box.wait_state("in_call")
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(up.install_file(made["v3"])))
    worker.start()
    try:
        wait_for(lambda: up.waited >= 5, 20, 0.05, "the updater asking a busy intercom")
        assert rec.installs == [], "installed during a call"
        assert box.status()["state"] == "in_call", "the call was disturbed"
        assert any("0.3.0 verified: waiting for the intercom to be idle (now in_call)" in line
                   for line in lines), lines
        assert box.cmd("hangup")["ok"]
        worker.join(30)
    finally:
        box.cmd("hangup")
        worker.join(30)
    assert not worker.is_alive()
    assert [(p, f, s) for p, f, s in rec.installs] == [(made["v3"], False, "idle")]
    assert done and done[0]["result"] == "installed" and done[0]["version"] == "0.3.0"
    store = Store(tmp_path / "update")
    state = store.read()
    assert state["pending_reboot"] == {"slot": "B", "version": "0.3.0", "auto": True,
                                       "boot_id": up.boot()}
    trial = store.read_trial()
    assert trial is not None and trial["slot"] == "B" and trial["from_slot"] == "A"
    assert (trial["version"], trial["from_version"], trial["inconclusive"]) == \
        ("0.3.0", "0.2.0", 0)
    st = box.status()["update"]  # what `intercom status` shows, read by the intercom itself
    assert st["last"]["result"] == "installed" and st["last"]["version"] == "0.3.0"
    assert st["pending_reboot"]["slot"] == "B"

    # the reboot: never during a call, and only once registered again
    assert box.cmd("call", "600")["ok"]
    box.wait_state("in_call")
    assert up.reboot_if_due() is False and rec.reboots == 0
    assert box.cmd("hangup")["ok"]
    box.wait_state("idle")
    assert up.reboot_if_due() is True and rec.reboots == 1


def test_a_call_that_begins_as_rauc_starts_is_waited_for_not_a_failure(
        box: Intercom, made: dict[str, Path], tmp_path: Path) -> None:
    """The button pressed between the updater's idle check and RAUC's pre-install handler: the
    handler refuses, the updater waits for the call's end and installs the same file then."""
    rec = Recorder(str(box.sock))

    def install(path: Path, force: bool) -> subprocess.CompletedProcess[str]:
        if not rec.installs:  # the first try: a call begins, the handler refuses
            assert box.cmd("call", "600")["ok"]
            box.wait_state("in_call")
            rec.installs.append((path, force, "refused"))
            return subprocess.CompletedProcess(
                ["rauc"], 1, "", "Pre-install handler error: Child process exited with code 1\n")
        return rec.install(path, force)

    up, _ = updater(tmp_path, str(box.sock), made["keyring"], install=install,
                    say=(lines := []).append)
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(up.install_file(made["v3"])))
    worker.start()
    try:
        wait_for(lambda: any("a call began" in line for line in lines), 20, 0.05,
                 "the updater to wait for the call")
        wait_for(lambda: up.waited >= 3, 20, 0.05, "the updater asking the busy intercom")
        assert len(rec.installs) == 1 and box.status()["state"] == "in_call"
        assert box.cmd("hangup")["ok"]
        worker.join(30)
    finally:
        box.cmd("hangup")
        worker.join(30)
    assert [s for _, _, s in rec.installs] == ["refused", "idle"]
    assert done and done[0]["result"] == "installed"


def test_an_intercom_that_does_not_answer_is_in_no_call(made: dict[str, Path],
                                                        tmp_path: Path) -> None:
    clock = itertools.count(1_000_000.0, 100.0)
    up, rec = updater(tmp_path, str(tmp_path / "no-such.sock"), made["keyring"],
                      now=lambda: next(clock))
    assert up.install_file(made["v3"])["result"] == "installed"
    assert rec.installs[0][2] == "down"
    # the reboot gives an intercom that is restarting its time, then goes ahead
    checks = 0
    while not up.reboot_if_due():
        checks += 1
        assert checks <= DOWN_GRACE / 100 + 1
    assert rec.reboots == 1 and checks >= 1
    # a second bundle of the same version waits for that reboot, not for a second install
    with pytest.raises(UpdateError, match="already installed: 0.3.0 is in slot B"):
        up.install_file(made["v3"])
    assert len(rec.installs) == 1


def test_refusals_are_recorded_and_rauc_install_failures_too(made: dict[str, Path],
                                                             tmp_path: Path) -> None:
    up, rec = updater(tmp_path, str(tmp_path / "no-such.sock"), made["keyring"])
    with pytest.raises(UpdateError):
        up.install_file(made["old"])
    last = Store(tmp_path / "update").read()["last"]
    assert (last["result"], last["reason"], last["version"]) == ("refused", b.OLDER, "0.1.0")
    assert rec.installs == []
    assert up.install_file(made["old"], force=True)["version"] == "0.1.0"
    assert rec.installs[-1][1] is True, "--force reaches rauc (--ignore-version-limit)"

    def failing(path: Path, force: bool) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            ["rauc"], 1, "LastError: Installation error: Failed updating slot rootfs.1: "
            "failed to copy image: Error splicing data: Input/output error\n",
            "Installing `x` failed\n")

    up2, _ = updater(tmp_path / "2", str(tmp_path / "no-such.sock"), made["keyring"],
                     install=failing)
    with pytest.raises(UpdateError):
        up2.install_file(made["v3"])
    state = Store(tmp_path / "2" / "update").read()
    assert (state["last"]["result"], state["last"]["reason"]) == ("failed", "rauc")
    assert "rauc install failed: Installation error" in state["last"]["message"]
    assert state["pending_reboot"] is None and Store(tmp_path / "2" / "update").read_trial() \
        is None


@pytest.fixture
def server(pki: dict[str, Path]) -> Iterator[BundleServer]:  # noqa: F811
    s = BundleServer(pki["cert"], pki["key"])
    yield s
    s.close()


def test_the_pull_loop_installs_reboots_and_then_leaves_an_unchanged_bundle_alone(
        made: dict[str, Path], tmp_path: Path, server: BundleServer,
        pki: dict[str, Path]) -> None:  # noqa: F811
    server.put("/intercom.raucb", made["v3"].read_bytes())
    clock = itertools.count(1_000_000.0, 100.0)
    url = server.url("/intercom.raucb")
    settings = {"url": url, "ca_file": str(pki["ca"])}
    up, rec = updater(tmp_path, str(tmp_path / "no-such.sock"), made["keyring"],
                      settings=settings, now=lambda: next(clock), boot=lambda: "boot-1")
    runner = threading.Thread(target=up.run)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "the loop did not reboot"
    assert rec.reboots == 1 and len(rec.installs) == 1
    assert [e["status"] for e in server.log] == [200]
    state = Store(tmp_path / "update").read()
    assert state["last"]["result"] == "installed" and state["checked_at"] is not None
    assert state["source"]["version"] == "0.3.0" and state["source"]["etag"]
    assert not (tmp_path / "update" / "download.raucb").exists(), "the bundle is not kept"

    # after the reboot: slot B runs 0.3.0; the same bundle on the server is not fetched again
    up2, rec2 = updater(tmp_path, str(tmp_path / "no-such.sock"), made["keyring"],
                        settings=settings, paths=slot_files(tmp_path / "box", "B", "0.3.0"),
                        boot=lambda: "boot-2")
    up2.forget_stale_reboot()
    assert Store(tmp_path / "update").read()["pending_reboot"] is None
    assert up2.check_url(url, str(pki["ca"])) is None
    assert server.log[-1]["status"] == 304 and rec2.installs == []


def test_a_refused_bundle_is_not_downloaded_again_a_damaged_one_is(
        made: dict[str, Path], tmp_path: Path, server: BundleServer,
        pki: dict[str, Path]) -> None:  # noqa: F811
    url, ca = server.url("/intercom.raucb"), str(pki["ca"])
    up, rec = updater(tmp_path, str(tmp_path / "no-such.sock"), made["keyring"])
    server.put("/intercom.raucb", made["old"].read_bytes())
    with pytest.raises(UpdateError, match="older than installed"):
        up.check_url(url, ca)
    assert Store(tmp_path / "update").read()["last"]["reason"] == b.OLDER
    assert up.check_url(url, ca) is None and up.check_url(url, ca) is None
    assert [e["status"] for e in server.log] == [200, 304, 304]
    assert Store(tmp_path / "update").read()["last"]["reason"] == b.OLDER, "still says why"

    server.put("/intercom.raucb", made["tampered"].read_bytes(), when=1_800_000_000.0)
    for _ in range(2):
        with pytest.raises(UpdateError, match="tampered"):
            up.check_url(url, ca)
    assert [e["status"] for e in server.log][-2:] == [200, 200], "a damaged bundle is retried"
    assert rec.installs == []
    assert not list((tmp_path / "update").glob("download.raucb*"))


def test_intercom_update_on_a_host_without_slots_says_so_in_one_line(
        made: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "intercom.yaml"
    config.write_text(json.dumps({
        "sip": {"server": "127.0.0.1", "username": "5002"},
        "control": {"socket": str(tmp_path / "control.sock")},
        "update": {"state_dir": str(tmp_path / "update"), "keyring": str(made["keyring"])}}))

    def update(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "firmware", "--config", str(config),
                               "update", *args], capture_output=True, text=True, cwd=REPO,
                              timeout=60)

    done = update(str(made["v3"]))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "update failed: this system was not started by the A/B boot script" in done.stdout
    last = Store(tmp_path / "update").read()["last"]
    assert (last["result"], last["reason"]) == ("failed", "not A/B")
    done = update("http://127.0.0.1:1/x.raucb")
    assert done.returncode == 1 and "over HTTPS only" in done.stdout
    assert update().returncode == 2


def test_an_install_the_updater_did_not_see_finish_is_put_on_trial(
        made: dict[str, Path], tmp_path: Path) -> None:
    """The updater stopped (or crashed) while RAUC installed: RAUC made slot B primary but
    no trial was written. The next start of the updater records it, so B boots on trial."""
    paths = slot_files(tmp_path / "box")
    (tmp_path / "box" / "central.raucs").write_text(
        "[slot.rootfs.1]\nbundle.version=0.3.0\nstatus=ok\n")
    (tmp_path / "box" / "system.conf").write_text(
        f"[system]\ndata-directory={tmp_path / 'box'}\n\n[slot.rootfs.0]\nbootname=A\n\n"
        "[slot.rootfs.1]\nbootname=B\n")
    store = Store(tmp_path / "update")
    up, _ = updater(tmp_path, str(tmp_path / "no-such.sock"), made["keyring"], paths=paths,
                    primary=lambda: "A")
    up.reconcile()
    assert store.read_trial() is None and store.read()["pending_reboot"] is None
    up.primary = lambda: "B"
    up.reconcile()
    trial = store.read_trial()
    assert trial is not None and (trial["slot"], trial["version"], trial["from_slot"],
                                  trial["from_version"]) == ("B", "0.3.0", "A", "0.2.0")
    state = store.read()
    assert state["pending_reboot"]["slot"] == "B" and state["last"]["result"] == "installed"
    assert "found installed in slot B" in state["last"]["message"]
    store.clear_trial()  # e.g. the health check has judged it: nothing is written twice
    with store.modify() as st:
        st["pending_reboot"] = None
    up.primary = lambda: None  # rauc status not answering: nothing is guessed
    up.reconcile()
    assert store.read_trial() is None


def test_intercom_updater_reads_the_card_stops_on_sigterm_and_survives_a_bad_yaml(
        made: dict[str, Path], tmp_path: Path, server: BundleServer,
        pki: dict[str, Path]) -> None:  # noqa: F811
    """The service's command: the boot YAML's update section, read again every round and at
    once on SIGHUP (systemctl reload); on a host not started by the A/B script it downloads
    nothing; a YAML broken meanwhile pauses pulling in one line; SIGTERM ends it cleanly."""
    server.put("/intercom.raucb", made["v3"].read_bytes())
    config = tmp_path / "intercom.yaml"
    doc = {"sip": {"server": "127.0.0.1", "username": "5002"},
           "control": {"socket": str(tmp_path / "control.sock")},
           "update": {"url": server.url("/intercom.raucb"), "ca_file": str(pki["ca"]),
                      "state_dir": str(tmp_path / "update"), "keyring": str(made["keyring"]),
                      "interval": 60}}
    config.write_text(json.dumps(doc))
    log = tmp_path / "updater.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "firmware", "--config", str(config),
                                 "updater"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: Store(tmp_path / "update").read()["last"]["reason"] == "not A/B", 20,
                 0.1, "the first check")
        assert server.log == [], "nothing is downloaded where nothing can be installed"
        config.write_text("update: [\n")
        proc.send_signal(signal.SIGHUP)  # systemctl reload
        wait_for(lambda: "pulling paused" in log.read_text(), 20, 0.2, "the bad YAML noticed")
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text and text.count("pulling paused") == 1


def test_a_version_whose_trial_was_inconclusive_waits_then_is_fetched_again(
        made: dict[str, Path], tmp_path: Path, server: BundleServer,
        pki: dict[str, Path]) -> None:  # noqa: F811
    """The PBX was down during v3's trial, the box went back to v2 (notes §6): v3 is neither
    good nor bad. While the health check holds it, the updater does not even fetch it; once
    the health check says "retry", the unchanged bundle is fetched and installed again (a
    conditional GET would have answered 304 for ever)."""
    url, ca = server.url("/intercom.raucb"), str(pki["ca"])
    server.put("/intercom.raucb", made["v3"].read_bytes())
    up, rec = updater(tmp_path, str(tmp_path / "no-such.sock"), made["keyring"])
    assert up.check_url(url, ca)["result"] == "installed"
    store = Store(tmp_path / "update")
    trial = store.read_trial()
    assert trial is not None
    # back on v2 after the trial; the health check's record of it
    with store.modify() as st:
        st["pending_reboot"] = None
    record = tmp_path / "update" / "trial-result.json"
    record.write_text(json.dumps({"version": "0.3.0", "trial": trial["installed_at"],
                                  "inconclusive": 1, "verdict": "inconclusive"}))
    assert up.check_url(url, ca) is None
    assert [e["status"] for e in server.log] == [200], "a held version is not fetched"
    with pytest.raises(UpdateError, match="0.3.0 is held"):  # nor installed by hand
        up.install_file(made["v3"])
    record.write_text(json.dumps({"version": "0.3.0", "trial": trial["installed_at"],
                                  "inconclusive": 1, "verdict": "retry"}))
    store.clear_trial()
    assert up.check_url(url, ca)["result"] == "installed"
    assert [e["status"] for e in server.log] == [200, 200] and len(rec.installs) == 2
