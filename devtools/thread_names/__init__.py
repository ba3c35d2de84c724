"""Which Python threads a process runs, seen from outside: ``env()`` puts this folder's
``sitecustomize`` on the process's PYTHONPATH (it names every Python thread's OS thread after
its ``threading`` name), ``names(pid)`` reads them back from /proc. Knows nothing about the
box."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


def env() -> dict[str, str]:
    """The environment entries that make a Python process name its threads."""
    rest = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{HERE}{os.pathsep}{rest}" if rest else str(HERE)}


def tasks(pid: int) -> list[tuple[int, str]]:
    """(thread id, OS name) of each thread of ``pid`` (``/proc/PID/task/*/comm``), in the
    order they started."""
    out = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda p: int(p.name)):
        try:
            out.append((int(task.name), (task / "comm").read_text().strip()))
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
    return out


def names(pid: int) -> list[str]:
    """The OS name of each thread of ``pid``, main thread first."""
    return [name for _, name in tasks(pid)]
