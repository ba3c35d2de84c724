"""The updater's record on /data/update (firmware.update.state) and what ``status`` makes of it
(firmware.update.slots): readers that never crash on a missing, damaged or hostile file, writes
that are atomic and serialised between processes by the lock, the trial record, and both slots'
versions from the kernel command line, /etc/intercom-version and RAUC's central.raucs."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from firmware.lockout_store import boot_id
from firmware.update import slots
from firmware.update.state import MAX_FILE, Store, empty_state


def test_a_missing_file_is_nothing_yet_and_a_damaged_one_is_unknown(tmp_path: Path) -> None:
    store = Store(tmp_path / "update")
    assert store.read() == empty_state() and store.read()["last"]["result"] == "none"
    assert store.read_trial() is None
    (tmp_path / "update").mkdir()
    for body in (b"{not json", b"\xff\xfe", b"[1, 2]", b"null", b"x" * (MAX_FILE + 10)):
        (tmp_path / "update" / "state.json").write_bytes(body)
        state = store.read()
        assert state["last"]["result"] == "unknown", body[:10]
        assert state["pending_reboot"] is None and state["refused_versions"] == []
    os.symlink("/etc/passwd", tmp_path / "update" / "trial.json")
    assert store.read_trial() is None, "a symlink is never followed"


def test_fields_of_the_wrong_type_are_dropped_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({
        "last": {"result": "hacked", "reason": ["x"], "version": "0.2.0\n\x1b[31m",
                 "at": "yesterday", "message": "a\nb"},
        "pending_reboot": {"slot": "C", "version": "1"},
        "refused_versions": ["0.3.0", 7, None, {"a": 1}],
        "checked_at": True}))
    state = Store(tmp_path).read()
    assert state["last"] == {"result": "unknown", "reason": "", "version": "0.2.0 ?[31m",
                             "at": None, "message": "a b", "acknowledged": False}
    assert state["pending_reboot"] is None
    assert state["refused_versions"] == ["0.3.0", "7"]
    assert state["checked_at"] is None


def test_writes_are_atomic_readable_by_the_intercom_and_replace_a_damaged_file(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "update")
    (tmp_path / "update").mkdir()
    (tmp_path / "update" / "state.json").write_bytes(b"garbage")
    entry = store.record("refused", "tampered", "0.3.0", "tampered: its content\ndoes not "
                         "match", now=1000.0)
    assert entry["message"] == "tampered: its content does not match"
    path = tmp_path / "update" / "state.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # intercom (not root) reads status
    assert json.loads(path.read_text())["last"] == {
        "result": "refused", "reason": "tampered", "version": "0.3.0", "at": 1000.0,
        "message": "tampered: its content does not match", "acknowledged": False}
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="unknown update result"):
        store.record("great")
    store.refuse_version("0.3.0")
    store.refuse_version("0.3.0")
    assert store.read()["refused_versions"] == ["0.3.0"]
    assert store.read()["last"]["result"] == "refused", "refuse_version keeps last"


def test_the_trial_record_round_trips_and_clears(tmp_path: Path) -> None:
    store = Store(tmp_path)
    trial = {"slot": "B", "version": "0.3.0", "from_slot": "A", "from_version": "0.2.0",
             "installed_at": 1234.5, "inconclusive": 0}
    store.write_trial(trial)
    assert store.read_trial() == trial
    assert stat.S_IMODE((tmp_path / "trial.json").stat().st_mode) == 0o644
    with pytest.raises(ValueError, match="needs from_version"):
        store.write_trial({k: v for k, v in trial.items() if k != "from_version"})
    store.clear_trial()
    store.clear_trial()
    assert store.read_trial() is None


def _bump(folder: str, times: int) -> None:
    store = Store(folder)
    for _ in range(times):
        with store.modify() as state:
            state["checked_at"] = (state["checked_at"] or 0) + 1


def test_writers_in_two_processes_do_not_lose_each_others_changes(tmp_path: Path) -> None:
    """The updater and ``intercom update`` (or the health check) may write at the same time:
    every read-modify-write happens under the lock file's flock."""
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_bump, args=(str(tmp_path), 60)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert Store(tmp_path).read()["checked_at"] == 180


# ----------------------------------------------------------------------------- slots
def box_files(tmp: Path, cmdline: str = "console=ttyS1 root=PARTUUID=1c0ffee0-02 rauc.slot=A",
              version: str = "0.2.0\n", central: str | None = None) -> slots.SlotPaths:
    (tmp / "cmdline").write_text(cmdline + "\n")
    (tmp / "intercom-version").write_text(version)
    (tmp / "system.conf").write_text(
        f"[system]\ncompatible=intercom-rpi-arm64\nbootloader=uboot\ndata-directory={tmp}\n\n"
        "[slot.rootfs.0]\ndevice=/dev/disk/by-partuuid/1c0ffee0-02\ntype=ext4\nbootname=A\n\n"
        "[slot.rootfs.1]\ndevice=/dev/disk/by-partuuid/1c0ffee0-03\ntype=ext4\nbootname=B\n")
    if central is not None:
        (tmp / "central.raucs").write_text(central)
    return slots.SlotPaths(cmdline=tmp / "cmdline", version=tmp / "intercom-version",
                           system_conf=tmp / "system.conf")


CENTRAL = """[slot.rootfs.1]
bundle.compatible=intercom-rpi-arm64
bundle.version=0.3.0
bundle.description=intercom 0.3.0
bundle.hash=2a9f
status=ok
installed.timestamp=2026-01-02T03:04:05Z
installed.count=1

[slot.rootfs.0]
bundle.version=0.1.9
status=ok
"""


def test_both_slots_versions_the_booted_one_from_its_own_root(tmp_path: Path) -> None:
    paths = box_files(tmp_path, central=CENTRAL)
    assert slots.booted_slot(paths) == "A"
    # A's RAUC record is older than what A runs (A came from the image, then RAUC wrote it
    # once): the running root's own file wins for the booted slot
    assert slots.versions(paths) == {"A": "0.2.0", "B": "0.3.0"}
    paths = box_files(tmp_path, cmdline="ro rauc.slot=B quiet", central=CENTRAL)
    assert slots.versions(paths) == {"A": "0.1.9", "B": "0.2.0"}


@pytest.mark.parametrize("cmdline,central,version,expect", [
    ("root=/dev/vda2", CENTRAL, "0.2.0\n", None),  # not started by the A/B script
    ("rauc.slot=C", CENTRAL, "0.2.0\n", None),
    ("rauc.slot=A", None, "0.2.0\n", {"A": "0.2.0", "B": "unknown"}),  # RAUC never wrote B
    ("rauc.slot=A", "[slot.rootfs.1\nbroken", "0.2.0\n", {"A": "0.2.0", "B": "unknown"}),
    ("rauc.slot=A", CENTRAL, "", {"A": "unknown", "B": "0.3.0"}),
    ("rauc.slot=A", CENTRAL, "0.2.0\nextra\n", {"A": "unknown", "B": "0.3.0"}),
])
def test_odd_or_missing_files_read_as_unknown(tmp_path: Path, cmdline: str,
                                              central: str | None, version: str,
                                              expect: dict[str, str] | None) -> None:
    paths = box_files(tmp_path, cmdline=cmdline, central=central, version=version)
    if expect is None:
        assert slots.booted_slot(paths) is None
    else:
        assert slots.versions(paths) == expect


def test_status_report_hides_a_pending_reboot_that_has_happened(tmp_path: Path) -> None:
    paths = box_files(tmp_path, central=CENTRAL)
    store = Store(tmp_path / "update")
    store.record("installed", "", "0.3.0", "0.3.0 installed in slot B", now=50.0)
    with store.modify() as state:
        state["pending_reboot"] = {"slot": "B", "version": "0.3.0", "auto": True,
                                   "boot_id": boot_id()}
    report = slots.report(tmp_path / "update", paths)
    assert report["booted_slot"] == "A" and report["installed"] == "0.2.0"
    assert report["slots"] == {"A": "0.2.0", "B": "0.3.0"}
    assert report["last"]["result"] == "installed" and report["last"]["at"] == 50.0
    assert report["pending_reboot"]["slot"] == "B"
    with store.modify() as state:
        state["pending_reboot"]["boot_id"] = "an-earlier-boot"
    assert slots.report(tmp_path / "update", paths)["pending_reboot"] is None
    assert json.dumps(report)  # what the control socket sends


def test_intercom_status_prints_the_slots_and_the_last_update(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from firmware.cli import _print_update

    paths = box_files(tmp_path, central=CENTRAL)
    store = Store(tmp_path / "update")
    store.record("refused", "older than installed", "0.1.0",
                 "older than installed: 0.1.0 < 0.2.0 (intercom update --force installs it)")
    _print_update(slots.report(tmp_path / "update", paths))
    out = capsys.readouterr().out.splitlines()
    assert out == ["slots: A 0.2.0, B 0.3.0; booted A",
                   "last update: refused (older than installed): older than installed: 0.1.0 "
                   "< 0.2.0 (intercom update --force installs it)"]
    _print_update(slots.report(tmp_path / "nothing", box_files(tmp_path, cmdline="quiet")))
    assert capsys.readouterr().out == "", "no A/B and no update yet: nothing to say"
