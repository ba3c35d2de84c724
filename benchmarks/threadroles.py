"""Whose thread is which, inside one running box process: the CPU benchmarks split the box's own
threads (main/asyncio, the media loop, Python card threads) from those that alsa-lib's jack
plugin starts inside the box (libjack's client threads, which a real sound card does not have).

Every thread of a Python process is called ``python`` by the kernel, so names cannot tell them
apart: this reads each thread's user-space backtrace once, with gdb in batch mode (a few
snapshots, the process stopped for a second or so each time; call it before measuring), and
classifies a thread by the code on its stack. Knows nothing of the box's modules beyond the
symbols it matches.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

MAIN, LOOP, PLUGIN, CAPTURE, PLAYBACK, PYTHON, OTHER = (
    "main (asyncio: SIP, control, logging)", "media loop (Cython, nogil)",
    "jack plugin (libjack client threads)", "capture card thread (Python)",
    "playback card thread (Python)", "other Python thread", "other native thread")
BOX_ROLES = (MAIN, LOOP, CAPTURE, PLAYBACK, PYTHON, OTHER)

_THREAD = re.compile(r"^Thread \d+ \(Thread 0x[0-9a-f]+ \(LWP (\d+)\)", re.M)
# the media loop's Cython code: the loop-paced one (MediaStream._loop) and the card-clocked one
# (a MediaStream loop, or the card's own code in firmware/core/_card.pyx, under it)
LOOP_CODE = re.compile(r"MediaStream_\w*loop|_card_\d*Card_\w+")


def available() -> bool:
    return shutil.which("gdb") is not None


def backtraces(pid: int) -> dict[int, str]:
    """{tid: its backtrace as gdb prints it} for every thread of ``pid`` (empty if gdb fails)."""
    try:
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx",
                              "-ex", "set pagination off", "-ex", "thread apply all bt 40"],
                             capture_output=True, text=True, timeout=90).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    marks = list(_THREAD.finditer(out))
    return {int(m.group(1)): out[m.start(): marks[i + 1].start() if i + 1 < len(marks)
                                 else len(out)]
            for i, m in enumerate(marks)}


def classify(pid: int, tid: int, stack: str) -> str:
    """The role of one thread from the code on its stack."""
    if tid == pid:
        return MAIN
    if LOOP_CODE.search(stack):
        return LOOP
    python = "pythread_wrapper" in stack or "thread_run" in stack
    if "libjack" in stack and not python:
        return PLUGIN
    if "alsapcm_read" in stack:
        return CAPTURE
    if "alsapcm_write" in stack:
        return PLAYBACK
    return PYTHON if python else OTHER


def roles(pid: int, snapshots: int = 2, gap: float = 0.3) -> dict[int, str]:
    """{tid: role}: a thread takes the most specific role any snapshot shows it in (a card
    thread waiting for the GIL looks like any Python thread in one snapshot)."""
    rank = {r: i for i, r in enumerate((OTHER, PYTHON, MAIN, PLAYBACK, CAPTURE, PLUGIN, LOOP))}
    out: dict[int, str] = {}
    for k in range(snapshots):
        if k:
            time.sleep(gap)
        for tid, stack in backtraces(pid).items():
            role = classify(pid, tid, stack)
            if tid not in out or rank[role] > rank[out[tid]]:
                out[tid] = role
    return out
