"""The door-code lockout kept over a restart: the supervisor hands its memory out and takes it
back (clamped, never extended), the file round-trips, a file from another boot is ignored,
and a file that makes no sense is a problem the application turns into a lockout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import firmware.supervisor as sv
from firmware import lockout_store as store

POLICY = sv.Policy(door_code="1234", register=False, door_code_max_failures=3,
                   door_code_window=300, door_code_lockout=120)


def in_call(s: sv.Supervisor, now: float) -> None:
    s.handle(sv.Incoming("pbx"), now)
    s.handle(sv.Connected(), now)


def wrong(s: sv.Supervisor, now: float) -> None:
    for d in "9999":
        s.handle(sv.Digit(d, "rtp"), now)


def opened(cmds: list[sv.Command]) -> bool:
    return any(isinstance(c, sv.PulseRelay) for c in cmds)


def test_a_new_supervisor_takes_the_lockout_over() -> None:
    first = sv.Supervisor(POLICY)
    first.start(1000.0)
    in_call(first, 1000.0)
    for t in (1000.0, 1001.0):
        wrong(first, t)
    kept = first.lockout_state()
    assert kept == sv.LockoutState((1000.0, 1001.0), None)
    wrong(first, 1002.0)  # the third: locked for 120 s
    kept = first.lockout_state()
    assert kept.lockout_until == 1122.0 and kept.failures == ()

    second = sv.Supervisor(POLICY)  # the restarted process
    cmds = second.start(1010.0, kept)
    assert sv.Led("error", "fast") in cmds and sv.StartTimer("door_lockout", 112.0) in cmds
    in_call(second, 1011.0)
    assert not opened([c for d in "1234" for c in second.handle(sv.Digit(d, "rtp"), 1012.0)])
    assert second.locked
    second.handle(sv.LockoutOver(), 1122.0)
    assert opened([c for d in "1234" for c in second.handle(sv.Digit(d, "rtp"), 1123.0)])


def test_failures_carry_over_and_count_towards_the_next_lockout() -> None:
    s = sv.Supervisor(POLICY)
    s.start(500.0, sv.LockoutState((450.0, 460.0), None))
    in_call(s, 500.0)
    wrong(s, 501.0)  # the third within the window
    assert s.locked and s.lockout_until == 621.0


def test_what_a_file_claims_is_clamped_not_believed() -> None:
    s = sv.Supervisor(POLICY)
    # a lockout "until" far in the future is cut to one lockout period; old failures drop out;
    # failures "from the future" count as now
    s.start(1000.0, sv.LockoutState((1.0, 5000.0), 10 ** 9))
    assert s.lockout_until == 1120.0 and list(s.failures) == [1000.0]
    s = sv.Supervisor(POLICY)
    assert s.start(1000.0, sv.LockoutState((), 999.0))[-1] == sv.Led("error", "off")
    assert not s.locked


def test_file_round_trip_and_another_boot(tmp_path: Path) -> None:
    state = sv.LockoutState((1.5, 2.5), 400.25)
    store.save(tmp_path, state)
    path = tmp_path / store.FILE_NAME
    assert path.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*.tmp")), "written through a renamed temporary file"
    assert store.load(tmp_path) == store.Loaded(state)
    assert store.parse(store.render(state, "other-boot"), "this-boot").state is None
    assert "reboot" in (store.parse(store.render(state, "a"), "b").note or "")
    assert store.load(tmp_path / "missing") == store.Loaded()


@pytest.mark.parametrize("text", [
    b"", b"{", b"[]", b"\xff\xfe", b'{"version": 2}', b"x" * 5000,
    json.dumps({"version": 1, "boot_id": "B", "failures": "many", "lockout_until": None}).encode(),
    json.dumps({"version": 1, "boot_id": "B", "failures": [True], "lockout_until": None}).encode(),
    json.dumps({"version": 1, "boot_id": "B", "failures": [], "lockout_until": "soon"}).encode(),
    b'{"version": 1, "boot_id": "B", "failures": [NaN], "lockout_until": null}',
    b'{"version": 1, "boot_id": "B", "failures": [], "lockout_until": Infinity}',
    json.dumps({"version": 1, "boot_id": "B", "failures": [0] * 2000,
                "lockout_until": None}).encode(),
])
def test_an_odd_file_is_a_problem_not_a_crash(text: bytes) -> None:
    found = store.parse(text, "B")
    assert found.problem and found.state is None


def test_an_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / store.FILE_NAME).mkdir()  # read() fails with EISDIR
    assert store.load(tmp_path).problem


# ----------------------------------------------------------------------------- in the App
def _box(tmp_path: Path):  # noqa: ANN202 - the box on fakes
    from devtools.box.fakes import FakeBox, fake_config
    return FakeBox(fake_config(tmp_path))


def test_the_app_keeps_the_lockout_and_the_next_app_takes_it(tmp_path: Path) -> None:
    from devtools.box.fakes import run

    first = _box(tmp_path)

    async def lock() -> None:
        await first.app.start()
        first.app.dispatch(sv.Incoming("pbx"))
        first.app.dispatch(sv.Connected())
        for _ in range(5):
            for d in "9999":
                first.app.dispatch(sv.Digit(d, "rtp"))
        assert first.app.status()["door_lockout_until"] is not None

    run(lock())
    kept = store.load(tmp_path).state
    assert kept is not None and kept.lockout_until == first.clock.now + 300

    second = _box(tmp_path)  # a new process: same runtime directory, same boot

    async def restart() -> None:
        await second.app.start()
        assert second.app.status()["door_lockout_until"] is not None
        assert second.board.leds["error"] == "fast"

    run(restart())


def test_a_corrupt_file_locks_for_one_period_and_is_replaced(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    from devtools.box.fakes import run

    (tmp_path / store.FILE_NAME).write_bytes(b'{"version": 1, "boot_id": ')
    box = _box(tmp_path)

    async def start() -> None:
        await box.app.start()
        assert box.app.sup.locked and box.app.sup.lockout_until == box.clock.now + 300
        assert box.board.leds["error"] == "fast"

    run(start())
    lines = [r for r in caplog.records if "lockout file" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "WARNING"
    assert store.load(tmp_path).state == box.app.sup.lockout_state(), "rewritten, readable"
