"""The card benchmarks' own instruments against the real things they read: which thread of a
process is the jack plugin's (gdb's backtraces of a process that really opens alsa-lib's jack
plugin on a dummy jackd, a Python thread reading its capture side), and callgrind switched on
for a window and counted per thread (valgrind on a real Python process).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import callgrind_card, threadroles
from devtools import jack_card
from devtools.paths import REPO
from devtools.waiting import wait_for

pytestmark = pytest.mark.integration

# a process shaped like the box on its ALSA path: the main thread idles, one Python thread
# reads 20 ms periods from the jack plugin's PCM (which starts libjack's threads in here)
CARD_READER = """
import sys, threading, time, alsaaudio
pcm = alsaaudio.PCM(alsaaudio.PCM_CAPTURE, device=sys.argv[1], channels=1, rate=8000,
                    format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=160)
def read():
    while True:
        pcm.read()
threading.Thread(target=read, daemon=True).start()
print("reading", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not jack_card.available() or not threadroles.available(),
                    reason="needs alsa-lib's jack plugin and gdb")
def test_the_jack_plugins_threads_are_told_from_the_processs_own(tmp_path: Path) -> None:
    jackd, env = jack_card.start(tmp_path, "icroles", "system:playback_1", "system:capture_1",
                                 160)
    proc = None
    try:
        time.sleep(0.7)
        proc = subprocess.Popen([sys.executable, "-c", CARD_READER, "icroles"], cwd=REPO,
                                env={**os.environ, **env}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "reading"
        time.sleep(0.5)
        roles = threadroles.roles(proc.pid)
        tasks = {int(p.name) for p in Path(f"/proc/{proc.pid}/task").iterdir()}
        assert set(roles) == tasks  # every thread is classified
        assert roles[proc.pid] == threadroles.MAIN
        assert list(roles.values()).count(threadroles.CAPTURE) == 1
        plugin = [t for t, r in roles.items() if r == threadroles.PLUGIN]
        assert plugin, roles  # libjack's client threads, started by alsa-lib in this process
        assert all(r in (threadroles.MAIN, threadroles.CAPTURE, threadroles.PLUGIN,
                         threadroles.PYTHON) for r in roles.values()), roles
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        jackd.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            jackd.wait(5)


# a thread that does a known, growing amount of work while instrumentation may be on
COUNTED = """
import threading, time
def work():
    while True:
        sum(range(20000))
        time.sleep(0.001)
threading.Thread(target=work, daemon=True).start()
print("working", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("callgrind_control") is None,
                    reason="needs valgrind")
def test_callgrind_counts_only_the_window_it_is_switched_on_for(tmp_path: Path) -> None:
    def counted(seconds: float, out: Path) -> dict[str, int]:
        out.mkdir()
        proc = subprocess.Popen([*callgrind_card._valgrind(out), sys.executable, "-c", COUNTED],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "working"
            wait_for(lambda: list(out.glob("cg.*")) or True, 5, 0.1, "valgrind")
            time.sleep(1)
            callgrind_card._measure(proc.pid, seconds)
            return callgrind_card.thread_counts(out, proc.pid)
        finally:
            proc.kill()
            proc.wait()

    short, long = counted(1.0, tmp_path / "short"), counted(4.0, tmp_path / "long")
    assert set(short) == {"other"} and short["other"] > 1_000_000
    # four times the window, about four times the instructions (not the start-up's)
    assert 2.5 < long["other"] / short["other"] < 6, (short, long)
    # the breakdown by object file adds up to each thread's total, and the work is Python's
    by_object: dict[str, int] = {}
    for path in (tmp_path / "long").glob("cg.*.1-*"):
        text = path.read_text()
        per_file = callgrind_card.objects(text)
        assert sum(per_file.values()) == int(text.split("\nsummary: ")[1].split()[0])
        for ob, n in per_file.items():
            by_object[ob] = by_object.get(ob, 0) + n
    assert sum(by_object.values()) == long["other"]
    top = max(by_object, key=by_object.__getitem__)
    assert "python" in top.rsplit("/", 1)[-1], top
