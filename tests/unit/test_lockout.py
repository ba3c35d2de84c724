"""The door code as an attacker tries it: judged only when complete, the same answer for every
wrong digit position, a lockout that holds across calls, one key sent two ways counted once."""

from __future__ import annotations

import firmware.supervisor as sv

BUTTONS = {"answer": sv.ButtonAction("answer")}


def make(**kw) -> sv.Supervisor:  # noqa: ANN003
    s = sv.Supervisor(sv.Policy(buttons=BUTTONS, door_code="1234", relay_seconds=2,
                                register=False, **kw))
    return s


def call(s: sv.Supervisor, now: float) -> None:
    s.handle(sv.Ended("previous"), now)
    s.handle(sv.Incoming("pbx"), now)
    s.handle(sv.Connected(), now)
    assert s.state == "in_call"


def key(s: sv.Supervisor, digits: str, now: float, source: str = "rtp") -> list[sv.Command]:
    cmds: list[sv.Command] = []
    for d in digits:
        cmds += s.handle(sv.Digit(d, source), now)
    return cmds


def opened(cmds: list[sv.Command]) -> bool:
    return any(isinstance(c, sv.PulseRelay) for c in cmds)


def test_a_wrong_first_digit_tells_nothing() -> None:
    """Every prefix of every attempt draws the same answer until the code is complete."""
    s = make()
    call(s, 0.0)
    answers = []
    for first in "0123456789":
        answers.append(s.handle(sv.Digit(first, "rtp"), 0.0))
        s.handle(sv.CodeTimeout(), 0.0)
    assert all(a == [sv.StartTimer("code", 5.0)] for a in answers), answers
    assert s.wrong_codes == 0
    assert not opened(key(s, "1235", 1.0)) and s.wrong_codes == 1
    assert opened(key(s, "1234", 2.0))


def test_hash_terminates_an_attempt() -> None:
    s = make()
    call(s, 0.0)
    cmds = key(s, "12#", 0.0)
    assert s.wrong_codes == 1 and not opened(cmds)
    assert key(s, "#", 1.0) == [], "a lone # is no attempt"
    assert opened(key(s, "1234#", 2.0)), "the code, then a harmless #"


def test_lockout_holds_across_calls_and_the_right_code_does_nothing() -> None:
    s = make()
    t = 0.0
    for i in range(5):  # 5 wrong codes over three calls (3 per call end a call)
        if i % 2 == 0:
            call(s, t)
        cmds = key(s, f"99{i}9", t)
        t += 10
    assert s.lockout_until == 40.0 + 300.0
    assert sv.Led("error", "fast") in cmds and sv.StartTimer("door_lockout", 300.0) in cmds
    call(s, t)
    cmds = key(s, "1234", t)
    assert not opened(cmds), "the right code during the lockout does nothing"
    assert any("lockout" in c.message for c in cmds if isinstance(c, sv.Log))
    call(s, 200.0)
    assert not opened(key(s, "1234", 200.0)), "still locked in a later call"
    cmds = s.handle(sv.LockoutOver(), 341.0)
    assert sv.Led("error", "off") in cmds
    call(s, 341.0)
    assert opened(key(s, "1234", 341.0))


def test_failures_outside_the_window_do_not_add_up() -> None:
    s = make(door_code_max_failures=3, door_code_window=60.0)
    for t in (0.0, 50.0, 120.0, 170.0):  # never 3 within 60 s
        call(s, t)
        key(s, "0000", t)
    assert s.lockout_until is None
    call(s, 200.0)
    key(s, "0000", 200.0)
    assert s.lockout_until is None, "170 and 200: two in the window"
    key(s, "0000", 210.0)
    assert s.lockout_until == 210.0 + 300.0


def test_registration_and_audio_do_not_clear_the_lockout_led() -> None:
    s = make(door_code_max_failures=1)
    call(s, 0.0)
    key(s, "0000", 0.0)
    assert sv.Led("error", "fast") in s.handle(sv.RegistrationUp(), 1.0)
    assert sv.Led("error", "fast") in s.handle(sv.AudioRecovered(), 1.0)


def test_a_key_sent_both_as_info_and_rfc4733_counts_once() -> None:
    s = make()
    call(s, 0.0)
    cmds: list[sv.Command] = []
    t = 0.0
    for d in "1234":
        cmds += s.handle(sv.Digit(d, "info"), t)
        cmds += s.handle(sv.Digit(d, "rtp"), t + 0.08)
        t += 0.3
    assert opened(cmds) and s.wrong_codes == 0


def test_repeated_keys_sent_both_ways_stay_repeated() -> None:
    s = sv.Supervisor(sv.Policy(door_code="1122", register=False))
    call(s, 0.0)
    order = [("1", "info", 0.0), ("1", "rtp", 0.05), ("1", "info", 0.3), ("1", "rtp", 0.35),
             ("2", "rtp", 0.6), ("2", "info", 0.62), ("2", "rtp", 0.9), ("2", "info", 0.95)]
    cmds = [c for d, src, t in order for c in s.handle(sv.Digit(d, src), t)]
    assert opened(cmds)


def test_the_same_key_twice_one_way_is_two_keys() -> None:
    s = sv.Supervisor(sv.Policy(door_code="11", register=False))
    call(s, 0.0)
    assert opened(key(s, "11", 0.0, "info"))
