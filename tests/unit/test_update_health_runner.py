"""The health check across boots (firmware.update.health_runner.Runner with the real decision,
the real state files of firmware.update.state in a temporary folder, and a virtual clock).

Fake: only what the runner does I/O with — systemd, the control socket, ``ip``, RAUC and the
reboot — played by ``World``, which keeps U-Boot's counters with RAUC's ``uboot`` semantics
(mark-good: BOOT_x_LEFT = 3; mark-bad: x leaves BOOT_ORDER, BOOT_x_LEFT = 0; an install puts the
new slot first with 3 attempts) and runs the boot script's choice on every boot. The real
``rauc`` and ``fw_setenv`` are in tests/integration/test_update_health.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from firmware.update import health
from firmware.update.health import Act, Limits
from firmware.update.health_runner import (
    Runner,
    acknowledge,
    global_address,
    install_hold,
    parse_show,
    service_from,
)
from firmware.update.state import Store

LIM = Limits()
POLL = 5.0


class World:
    """The box around the runner: U-Boot, the slots' releases, the PBX, virtual time."""

    def __init__(self) -> None:
        self.t = 0.0
        self.order = ["A", "B"]
        self.left = {"A": 3, "B": 3}
        self.release = {"A": "good", "B": "good"}  # good | crash | deaf | refused
        self.version = {"A": "1.1.0", "B": "1.0.0"}
        self.pbx: Callable[[float], bool] = lambda t: True
        self.booted = ""
        self.boot_at = 0.0
        self.rebooted = False
        self.boots: list[str] = []
        self.lines: list[str] = []
        self.mark_fails = 0  # how many rauc calls fail before they work

    # ------------------------------------------------------------ U-Boot and RAUC
    def boot(self) -> str:
        for slot in self.order:
            if self.left[slot] > 0:
                self.left[slot] -= 1
                self.booted, self.boot_at, self.rebooted = slot, self.t, False
                self.boots.append(slot)
                return slot
        self.left = {"A": 3, "B": 3}  # the script's last resort, then reset
        return self.boot()

    def install(self, store: Store, version: str, release: str) -> None:
        """What RAUC (set_primary) and the installer (trial.json) do."""
        target = "B" if self.booted == "A" else "A"
        self.release[target], self.version[target] = release, version
        self.order = [target] + [s for s in self.order if s != target]
        self.left[target] = 3
        store.write_trial({"slot": target, "version": version, "from_slot": self.booted,
                           "from_version": self.version[self.booted],
                           "installed_at": 1e9 + self.t, "inconclusive": 0})

    # ------------------------------------------------------------ the runner's I/O
    def _since(self) -> float:
        return self.t - self.boot_at

    def service(self) -> dict[str, str] | None:
        if self.release[self.booted] == "crash":
            return {"LoadState": "loaded", "ActiveState": "activating",
                    "NRestarts": str(int(self._since() // 10))}
        return {"LoadState": "loaded", "ActiveState": "active", "NRestarts": "0"}

    def status(self) -> dict[str, Any] | None:
        kind, up = self.release[self.booted], self.pbx(self.t)
        if kind == "crash":
            return None
        registered = kind == "good" and up and self._since() >= 2.0
        answer = 200 if registered else 403 if kind == "refused" and up else None
        return {"ok": True, "registered": registered, "registrar_answer": answer}

    def has_address(self) -> bool:
        return True

    def mark(self, good: bool) -> str | None:
        if self.mark_fails:
            self.mark_fails -= 1
            return "rauc status mark-good: Failed to run fw_setenv: No such file or directory"
        slot = self.booted
        if good:
            self.left[slot] = 3
        else:
            self.order = [s for s in self.order if s != slot]
            self.left[slot] = 0
        return None

    def reboot(self) -> str | None:
        self.rebooted = True
        return None

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        assert self.t < 50_000, "the health check never finished"


def one_boot(world: World, store: Store, limits: Limits = LIM) -> Runner:
    runner = Runner(store, world, world.boot(), limits, clock=lambda: world.t,  # type: ignore
                    wall=lambda: 1e9 + world.t, out=world.lines.append)
    assert runner.run(POLL, world.sleep) == 0
    return runner


def until_ordinary(world: World, store: Store) -> None:
    """Boot until a boot ends with nothing pending (no reboot asked for)."""
    for _ in range(10):
        one_boot(world, store)
        if not world.rebooted:
            return
    raise AssertionError(f"still rebooting: {world.boots}")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "update")


def test_an_ordinary_boot_is_marked_good_after_60_s_with_the_pbx_down(store: Store) -> None:
    world = World()
    world.pbx = lambda t: False
    world.left["A"] = 1
    one_boot(world, store)
    assert world.left == {"A": 3, "B": 3} and not world.rebooted
    assert 60.0 <= world.t <= 60.0 + POLL
    assert world.lines == ["slot A is good: the intercom has run for 60 s"]
    assert store.read()["last"]["result"] == "none", "an ordinary boot writes no update result"


def test_a_good_release_is_kept_when_the_pbx_is_back(store: Store) -> None:
    world = World()
    until_ordinary(world, store)
    world.install(store, "1.2.0", "good")
    until_ordinary(world, store)
    assert world.boots == ["A", "B"] and world.order[0] == "B" and world.left["B"] == 3
    last = store.read()["last"]
    assert (last["result"], last["reason"], last["version"]) == ("ok", "registered", "1.2.0")
    assert store.read_trial() is None and not (store.folder / health.RECORD).exists()


def test_a_pbx_down_during_the_trial_neither_rolls_back_a_good_release_forever(
        store: Store) -> None:
    """The PBX is down for the trial and for a while after the rollback: the version is held,
    then tried again once the old release has been registered for 10 minutes, and kept."""
    world = World()
    until_ordinary(world, store)
    world.install(store, "1.2.0", "good")
    start = world.t
    world.pbx = lambda t: t > start + 3 * 600 + 900  # back 15 min after the rollback
    until_ordinary(world, store)
    assert world.boots == ["A", "B", "B", "B", "A"], "3 silent boots of B, then A"
    assert world.t - start <= 3 * (600 + POLL) + 900 + 600 + 3 * 15, "bounded"
    state = store.read()
    assert (state["last"]["result"], state["last"]["version"]) == ("rolled_back", "1.2.0")
    assert "no answer from the PBX" in state["last"]["message"]
    assert health.alert(state) is not None, "the error LED shows it"
    assert state["refused_versions"] == [], "not refused: the PBX was down"
    record = json.loads((store.folder / health.RECORD).read_text())
    assert (record["verdict"], record["inconclusive"]) == ("retry", 1)
    assert health.install_hold(record, "1.2.0") is None and store.read_trial() is None
    assert any("may be installed again (1 of 3" in line for line in world.lines)
    # the updater installs it again; the PBX is up now: the trial succeeds
    world.install(store, "1.2.0", "good")
    until_ordinary(world, store)
    assert world.boots[-1] == "B" and store.read()["last"]["result"] == "ok"
    assert health.alert(store.read()) is None, "a successful update ends the alert"


def test_a_version_is_held_while_its_inconclusive_verdict_waits(store: Store) -> None:
    world = World()
    until_ordinary(world, store)
    world.install(store, "1.2.0", "good")
    world.pbx = lambda t: False
    for _ in range(3):
        one_boot(world, store)
    runner = Runner(store, world, world.boot(), LIM, clock=lambda: world.t,  # type: ignore
                    wall=lambda: 1e9 + world.t, out=world.lines.append)
    for _ in range(int(LIM.register_timeout / POLL) + 2):
        runner.step()
        world.sleep(POLL)
    assert "1.2.0 is held" in (install_hold(store, "1.2.0") or ""), "the updater waits"
    assert install_hold(store, "1.3.0") is None
    assert store.read_trial() is not None, "the trial stays until the verdict"


def test_a_pbx_down_during_every_trial_does_not_keep_a_version_forever(store: Store) -> None:
    """Three trials in a row end inconclusive: the third one refuses the version."""
    world = World()
    until_ordinary(world, store)
    for n in range(3):
        world.install(store, "1.2.0", "good")
        start = world.t
        world.pbx = lambda t, s=start: t > s + 3 * 600 + 300  # type: ignore[misc]
        until_ordinary(world, store)
        refused = store.read()["refused_versions"]
        assert refused == ([] if n < 2 else ["1.2.0"]), n
    assert world.boots.count("B") == 9
    assert "3 trials ended with the PBX or the network unreachable" in \
        store.read()["last"]["message"]


def test_a_release_the_pbx_refuses_is_given_up_and_refused(store: Store) -> None:
    world = World()
    until_ordinary(world, store)
    world.install(store, "1.2.0", "refused")
    start = world.t
    until_ordinary(world, store)
    assert world.boots == ["A", "B", "A"], "marked bad: straight back to A"
    assert world.order == ["A"] and world.left == {"A": 3, "B": 0}
    state = store.read()
    assert state["refused_versions"] == ["1.2.0"]
    assert state["last"]["result"] == "rolled_back" and state["last"]["reason"] == "register"
    assert state["last"]["message"].startswith(
        "rolled back from 1.2.0 to 1.1.0: 1.2.0 (slot B) failed: the PBX answered but it did "
        "not register within 180 s")
    assert "will not be installed again: 1.1.0 registered" in state["last"]["message"]
    assert world.t - start < 180 + 60 + 3 * POLL
    assert any(line.endswith("marking slot B bad and rebooting into slot A (1.1.0)")
               for line in world.lines)
    assert store.read_trial() is None and not (store.folder / health.RECORD).exists()


def test_a_release_that_only_looks_silent_is_refused_once_the_old_one_registers(
        store: Store) -> None:
    world = World()
    until_ordinary(world, store)
    world.install(store, "1.2.0", "deaf")  # sends nowhere: the PBX, which is up, hears nothing
    until_ordinary(world, store)
    assert world.boots == ["A", "B", "B", "B", "A"]
    assert store.read()["refused_versions"] == ["1.2.0"]


def test_a_release_whose_intercom_crashes_is_refused_even_with_the_pbx_down(
        store: Store) -> None:
    world = World()
    world.pbx = lambda t: False
    until_ordinary(world, store)
    world.install(store, "1.2.0", "crash")
    start = world.t
    until_ordinary(world, store)
    assert world.boots == ["A", "B", "A"]
    assert world.t - start < 60 + 60 + 2 * POLL, "no waiting for the PBX"
    state = store.read()
    assert state["refused_versions"] == ["1.2.0"] and state["last"]["reason"] == "service"
    assert "the intercom restarted 3 times" in state["last"]["message"]


def test_a_failing_rauc_is_said_once_and_retried(store: Store) -> None:
    world = World()
    world.mark_fails = 4
    one_boot(world, store)
    assert world.left["A"] == 3
    assert world.lines == ["rauc status mark-good: Failed to run fw_setenv: No such file or "
                           "directory (retrying)", "slot A is good: the intercom has run for "
                                                   f"{60 + 4 * POLL:.0f} s"]


def test_an_unwritable_record_is_one_line_and_a_retry(store: Store) -> None:
    world = World()
    until_ordinary(world, store)
    world.install(store, "1.2.0", "refused")
    (store.folder / health.RECORD).mkdir()  # os.replace onto a directory fails
    runner = Runner(store, world, world.boot(), LIM, clock=lambda: world.t,  # type: ignore
                    wall=lambda: 1e9 + world.t, out=world.lines.append)
    world.t += LIM.register_timeout
    d = runner.step()
    assert d.act is Act.WAIT and not world.rebooted
    assert world.lines[-1].startswith(f"cannot write {store.folder}: ")
    assert "1.2.0 (slot B) failed: the PBX answered" in world.lines[-1]
    (store.folder / health.RECORD).rmdir()
    assert runner.step().act is Act.MARK_BAD and world.rebooted


def test_systemctl_show_is_read_property_by_property() -> None:
    text = ("LoadState=loaded\nActiveState=failed\nSubState=failed\nNRestarts=4\n"
            "Result=exit-code\nExecMainCode=1\nExecMainStatus=2\nConditionResult=yes\n"
            "Garbage line\nOther=1\n")
    props = parse_show(text)
    assert props["ActiveState"] == "failed" and "Other" not in props
    s = service_from(props, 0.0)
    assert (s.state, s.restarts, s.config_refused, s.skipped) == ("failed", 4, True, False)
    killed = service_from({**props, "ExecMainCode": "2"}, 0.0)  # SIGINT is status 2 too
    assert not killed.config_refused
    skipped = service_from({"LoadState": "loaded", "ActiveState": "inactive",
                            "ConditionResult": "no", "NRestarts": "x"}, 0.0)
    assert skipped.skipped and skipped.restarts == 0
    assert service_from({"LoadState": "not-found", "ActiveState": "inactive"}, 0.0).state \
        == "missing"
    assert service_from(None, 0.0).state == "unknown"
    assert service_from({"ActiveState": "active"}, 42.0).active_for == 42.0


def test_an_address_is_a_global_one_on_an_interface_that_is_up() -> None:
    up = {"ifname": "eth0", "flags": ["BROADCAST", "UP", "LOWER_UP"],
          "addr_info": [{"family": "inet", "local": "192.0.2.2", "scope": "global"}]}
    assert global_address(json.dumps([up]))
    assert not global_address(json.dumps([{**up, "flags": ["BROADCAST"]}]))
    assert not global_address(json.dumps([{**up, "addr_info": []}]))
    assert not global_address(json.dumps([{**up, "ifname": "lo"}]))
    for junk in ("", "not json", "{}", "[1, null]", '[{"flags": "UP", "addr_info": 3}]'):
        assert not global_address(junk)


def test_acknowledging_a_rollback_keeps_the_record_and_ends_the_alert(
        store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert acknowledge(str(store.folder)) == 0
    assert capsys.readouterr().out == "intercom: no rollback to acknowledge (last update: none)\n"
    store.record("rolled_back", "register", "1.2.0", "rolled back from 1.2.0 to 1.1.0: why")
    assert health.alert(store.read()) is not None
    assert acknowledge(str(store.folder)) == 0
    assert capsys.readouterr().out == ("intercom: acknowledged: rolled back from 1.2.0 to "
                                       "1.1.0: why\n")
    last = store.read()["last"]
    assert last["result"] == "rolled_back" and last["acknowledged"] is True
    assert health.alert(store.read()) is None
    assert acknowledge(str(store.folder)) == 0
    assert "no rollback to acknowledge" in capsys.readouterr().out
