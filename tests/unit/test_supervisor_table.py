"""The supervisor's tables: the README's state diagram is the one drawn from them, and the
tables themselves are complete and consistent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from firmware import supervisor as sv

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_diagram_is_drawn_from_the_table() -> None:
    text = README.read_text()
    assert text.count(sv.README_BEGIN) == 1 and text.count(sv.README_END) == 1
    start = text.index(sv.README_BEGIN)
    end = text.index(sv.README_END) + len(sv.README_END) + 1
    assert text[start:end] == sv.readme_section(), (
        "README.md's state diagram differs from firmware/supervisor.py's tables: replace the "
        "section with the output of `python -m firmware.supervisor --readme`")


def test_diagram_command_prints_every_state_change() -> None:
    out = subprocess.run([sys.executable, "-m", "firmware.supervisor", "--diagram"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("stateDiagram-v2\n")
    for row in sv.TRANSITIONS:
        if row.next is not None and row.next != row.state:
            assert f"    {row.state} --> {row.next}: {row.event}" in out, row


def test_every_user_request_is_either_a_row_or_refused() -> None:
    for state in sv.State:
        for event in (sv.UserCall("5001"), sv.UserAnswer(), sv.UserHangup()):
            s = sv.Supervisor(sv.Policy(register=False))
            s.state = state
            has_row = any(r.state is state and r.event is event.kind for r in sv.TRANSITIONS)
            cmds = s.handle(event)
            refused = [c for c in cmds if isinstance(c, sv.Refused)]
            assert bool(refused) != has_row, (state, event, cmds)


def test_button_table_only_names_requests_the_state_accepts() -> None:
    for (state, action), request in sv.BUTTONS.items():
        assert any(r.state is state and r.event is request for r in sv.TRANSITIONS), \
            (state, action, request)


# the memory the guards read, each combination of it: every guard must be true in some and
# false in others (checked below), so these contexts really exercise each guard both ways
CONTEXTS = [{"registered": registered, "audio_ok": audio_ok, "lockout_until": until}
            for registered in (True, False) for audio_ok in (True, False)
            for until in (None, 10.0)]  # the supervisor's now is 0: 10.0 = locked

# (state, event) -> the rows' outcomes the tests expect, per context: (next state or None,
# effect names); a pair not listed has no row (the event does nothing, or is refused)
_, OFF, IDL, CAL, RNG, INC = None, "offline", "idle", "calling", "ringing", "in_call"
REST, CALLS, ALL = (OFF, IDL), (CAL, RNG, INC), (OFF, IDL, CAL, RNG, INC)


def expect(states: tuple[str, ...], event: str, outcome: object) -> dict:
    return {(state, event): outcome for state in states}


def by_audio(ok: tuple, failed: tuple):  # noqa: ANN201
    return lambda ctx: ok if ctx["audio_ok"] else failed


def by_registration(yes: tuple, no: tuple):  # noqa: ANN201
    return lambda ctx: yes if ctx["registered"] else no


def by_lockout(open_: tuple, locked: tuple):  # noqa: ANN201
    return lambda ctx: locked if ctx["lockout_until"] else open_


EXPECTED = {
    **expect(REST, "UserCall", by_audio((CAL, ("dial",)), (_, ("refuse_call_no_audio",)))),
    **expect(REST, "Incoming", by_audio((RNG, ("ring",)), (_, ("refuse_no_audio",)))),
    **expect(CALLS, "Incoming", (_, ("busy",))),
    (CAL, "RemoteRinging"): (_, ()),
    **expect((CAL, RNG), "Connected", (INC, ("connected",))),
    **expect(CALLS, "Ended", by_registration((IDL, ("ended",)), (OFF, ("ended",)))),
    (INC, "Digit"): (_, ("digit",)),
    (RNG, "UserAnswer"): (_, ("answer",)),
    **expect((CAL, INC), "UserHangup", (_, ("hangup",))),
    (RNG, "UserHangup"): (_, ("decline",)),
    (RNG, "RingTimeout"): (_, ("reject_unavailable",)),
    (CAL, "RingTimeout"): (_, ("hangup",)),
    (RNG, "AutoAnswerDue"): (_, ("answer",)),
    (INC, "MaxDurationReached"): (_, ("log_max_duration", "hangup")),
    (INC, "CodeTimeout"): (_, ("forget_digits",)),
    **expect(ALL, "LockoutOver", (_, ("lockout_over",))),
    **expect(ALL, "RegistrationUp", (_, ("registration_up",))),
    (OFF, "RegistrationUp"): (IDL, ("registration_up",)),
    **expect(ALL, "RegistrationDown", (_, ("registration_down",))),
    (IDL, "RegistrationDown"): (OFF, ("registration_down",)),
    **expect(REST, "AudioFailed", (_, ("audio_failed",))),
    **expect((CAL, INC), "AudioFailed", (_, ("audio_failed", "hangup"))),
    (RNG, "AudioFailed"): (_, ("audio_failed", "reject_unavailable")),
    **expect(ALL, "AudioRecovered", (_, ("audio_recovered",))),
    **expect(ALL, "AudioLost", (_, ("audio_failed",))),
    **expect(ALL, "UpdateAlert", (_, ("update_alert",))),
    **expect(ALL, "OpenDoor", by_lockout((_, ("open_door",)), (_, ("refuse_locked",)))),
}


def supervisor_in(state: sv.State, context: dict[str, bool]) -> sv.Supervisor:
    s = sv.Supervisor(sv.Policy(register=False))
    s.state = state
    for name, value in context.items():
        setattr(s, name, value)
    return s


def test_the_contexts_make_every_guard_true_and_false() -> None:
    used = {r.guard for r in sv.TRANSITIONS if r.guard is not None}
    assert used == set(sv.GUARDS), "every guard is used, and listed in GUARDS"
    for guard in sv.GUARDS:
        seen = {guard.holds(supervisor_in(sv.State.IDLE, ctx)) for ctx in CONTEXTS}
        assert seen == {True, False}, guard.label


def test_guards_exclude_each_other_and_the_table_is_what_the_tests_expect() -> None:
    """Every (state, event, context): the guards of the rows evaluated, at most one row
    applies, and it is the expected one (next state and effects); no row where none is
    expected. A guarded pair has a row in every context (its guards cover all cases)."""
    for state in sv.State:
        for kind in sv.EventKind:
            rows = [r for r in sv.TRANSITIONS if r.state is state and r.event is kind]
            for ctx in CONTEXTS:
                s = supervisor_in(state, ctx)
                applying = [r for r in rows if r.guard is None or r.guard.holds(s)]
                assert len(applying) <= 1, (state, kind, ctx, applying)
                assert s.row_for(kind) == (applying[0] if applying else None)
                want = EXPECTED.get((state.value, kind.value))
                if callable(want):
                    want = want(ctx)
                got = None if not applying else (
                    applying[0].next.value if applying[0].next else None,
                    tuple(f.__name__.lstrip("_") for f in applying[0].effects))
                assert got == want, (state, kind, ctx)


def test_every_timer_fires_its_own_event_and_has_rows() -> None:
    assert set(sv.TIMER_EVENTS) == set(sv.Timer)
    for timer in sv.Timer:
        event = sv.timer_event(timer.value)
        assert event.timer is timer and event.kind in {r.event for r in sv.TRANSITIONS}
    assert len({cls.kind for cls in sv.TIMER_EVENTS.values()}) == len(sv.Timer)


def test_effects_and_guards_are_objects_not_names() -> None:
    """A misspelt effect or guard fails at import: the rows hold the functions themselves."""
    for row in sv.TRANSITIONS:
        assert all(callable(f) and getattr(sv.Supervisor, f.__name__) is f
                   for f in row.effects), row
        assert row.guard is None or row.guard in sv.GUARDS, row
