"""The kernel test guest's failures are clear and bounded: a guest that cannot be fetched is one
line naming apt's cause; a command that hangs is killed at its budget, QEMU with it, and the
error carries the console's tail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtools import kguest
from devtools.paths import CACHE

pytestmark = pytest.mark.kernel


def test_no_network_is_one_line_naming_the_download(guest: kguest.Guest, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # apt itself, its mirror behind a proxy on a closed loopback port; an empty cache
    conf = tmp_path / "apt.conf"
    conf.write_text('Acquire::http::Proxy "http://127.0.0.1:9";\n'
                    'Acquire::Retries::Delay "false";\n')
    monkeypatch.setenv("APT_CONFIG", str(conf))
    with pytest.raises(kguest.KguestError) as failed:
        kguest.prepare(tmp_path / "cache")
    message = str(failed.value)
    assert "\n" not in message, message
    assert message.startswith("kguest: apt-get download linux-image-"), message
    assert "127.0.0.1:9" in message, message
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-made left behind


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(
                    errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_hanging_command_is_killed_at_its_budget(guest: kguest.Guest, tmp_path: Path) -> None:
    with pytest.raises(kguest.KguestTimeoutError) as failed:
        kguest.run(guest, "sleep 1000", 15, tmp_path)
    message = str(failed.value)
    assert "ran past its 15 s budget" in message and "'sleep 1000'" in message, message
    assert message.split("console tail:\n", 1)[1].strip(), message
    assert _processes_naming(f"path={tmp_path}") == [], "QEMU outlived its budget"
    assert os.listdir(tmp_path) == []


def test_apt_lists_that_do_not_know_the_kernel_are_refreshed_once(
        guest: kguest.Guest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose packages were all installed long ago (build.sh then never runs
    ``apt-get update``): apt's lists, here an empty folder of their own, know no kernel; the
    guest is still found, from lists ``prepare`` refreshed itself."""
    lists = tmp_path / "lists"
    (lists / "partial").mkdir(parents=True)
    conf = tmp_path / "apt.conf"
    conf.write_text(f'Dir::State::Lists "{lists}";\n')
    monkeypatch.setenv("APT_CONFIG", str(conf))
    with pytest.raises(kguest.KguestError):
        kguest.kernel_package()
    made = kguest.prepare(CACHE)
    assert (made.package, made.release) == (guest.package, guest.release)
    assert any("Packages" in p.name for p in lists.iterdir()), list(lists.iterdir())
