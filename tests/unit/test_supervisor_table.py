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


def test_guards_of_one_state_and_event_exclude_each_other() -> None:
    for state in sv.State:
        for kind in sv.EventKind:
            rows = [r for r in sv.TRANSITIONS if r.state is state and r.event is kind]
            if len(rows) > 1:
                assert all(r.guard for r in rows), rows
