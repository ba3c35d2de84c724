"""The update benchmark's own instruments (benchmarks/update.py), against the real things they
read: the install-like load at the box's RAUC priority with this host's rauc, and the count of
registrations in Asterisk 22's log that times "reboot -> registered" (a real intercom process
registering, stopping, registering again: what a reboot looks like to the PBX).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import update
from devtools import bundles
from devtools.asterisk import Asterisk
from devtools.paths import REPO
from devtools.waiting import wait_for

pytestmark = pytest.mark.integration


def test_the_load_installs_the_bundles_root_at_the_boxs_rauc_priority(tmp_path: Path) -> None:
    content = tmp_path / "content"
    (content / "usr/share/marker").mkdir(parents=True)
    (content / "usr/share/marker/data").write_bytes(os.urandom(3 * update.MIB))
    root = tmp_path / "root.ext4"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(content), str(root), "16M"],
                   check=True)
    key, cert = bundles.make_key_pair(tmp_path / "key", "load test")
    bundle = bundles.make_bundle(root, tmp_path / "b.raucb", "9.9.9", key, cert)
    unpack, slot, progress = tmp_path / "unpack", tmp_path / "slot.img", tmp_path / "p.jsonl"
    unpack.mkdir()
    done = subprocess.run([*update.LOW_PRIORITY, sys.executable, "-m", "benchmarks.update",
                           "load", str(bundle), str(cert), str(unpack), str(slot),
                           str(progress), "2"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    notes = [json.loads(line) for line in progress.read_text().splitlines()]
    start = notes[0]
    assert start["event"] == "start"
    assert (start["policy"], start["nice"]) == (os.SCHED_BATCH, 19), start
    assert start["io"] == "idle", start
    installed = [n for n in notes if n["event"] == "installed"]
    assert [n["installs"] for n in installed] == [1, 2]
    size = root.stat().st_size
    assert installed[-1]["written"] == 2 * size
    # the slot holds the bundle's root (its version file written by the maker), whole
    assert slot.stat().st_size == size
    assert bundles.read_file(slot, "/etc/intercom-version") == b"9.9.9\n"
    assert bundles.read_file(slot, "/usr/share/marker/data") == \
        (content / "usr/share/marker/data").read_bytes()
    assert list(unpack.iterdir()) == []  # nothing left behind in the unpack folder


def test_the_window_counts_only_what_was_written_inside_it() -> None:
    notes = [{"t": 1.0, "event": "start"},
             {"t": 2.0, "event": "synced", "written": 64},
             {"t": 3.0, "event": "installed", "written": 100, "installs": 1},
             {"t": 4.0, "event": "synced", "written": 164},
             {"t": 5.0, "event": "installed", "written": 200, "installs": 2},
             {"t": 6.0, "event": "synced", "written": 264}]
    # from the last total before the window to the last one inside it; installs that ended in it
    assert update.in_window(notes, 2.5, 5.5) == {"bytes": 200 - 64, "installs": 2,
                                                 "seconds": 3.0}
    assert update.in_window(notes, 3.5, 4.5) == {"bytes": 64, "installs": 0, "seconds": 1.0}
    assert update.in_window(notes, 0.0, 1.5)["bytes"] == 0


def test_each_registration_of_a_restarted_box_is_counted(tmp_path: Path, asterisk: Asterisk,
                                                         intercom) -> None:
    box = intercom()
    wait_for(lambda: box.status().get("registered"), 20, 0.2, "the box to register")
    wait_for(lambda: update.registrations(asterisk.log_text(), "5002") == 1, 10, 0.2,
             "Asterisk to log the registration")
    assert update.registrations(asterisk.log_text(), "5001") == 0
    box.stop()  # unregisters, as the box does when it reboots
    wait_for(lambda: not asterisk.registered("5002"), 10, 0.2, "the unregistration")
    assert update.registrations(asterisk.log_text(), "5002") == 1
    again = intercom()
    wait_for(lambda: again.status().get("registered"), 20, 0.2, "the box to register again")
    wait_for(lambda: update.registrations(asterisk.log_text(), "5002") == 2, 10, 0.2,
             "Asterisk to log the second registration")
