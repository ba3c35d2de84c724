"""Opening and closing a sound card never holds the GIL, on real alsa-lib.

A plugin's open or close may wait: alsa-lib's jack plugin waits for jackd's graph, which may
wait for a JACK client in the same process whose callback needs the GIL (the test rooms do; CI
once hung for an hour on it), and a USB card that is going may take its time. Here the wait is
made certain: the speaker is alsa-lib's ``file`` plugin writing to a FIFO, whose open blocks
until a reader comes, and the reader is a Python thread that asks for the GIL only after the
open has begun. Holding the GIL through the open is a deadlock; the check runs in a child
process with a time limit, so that a regression fails here instead of hanging the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import compiled

pytest.importorskip("firmware.core._card", reason=compiled.REASON)

pytestmark = [pytest.mark.compiled, pytest.mark.integration]

CHILD = textwrap.dedent("""
    import sys, threading, time
    from firmware.core._card import Card

    fifo = sys.argv[1]
    got = []

    def reader():
        time.sleep(0.5)  # wants the GIL again only once the open below waits for a reader
        with open(fifo, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=reader)
    t.start()
    card = Card("null", "fifospeaker")
    assert card.start()
    for _ in range(10):
        card.write(bytes(320))
    card.close()
    t.join()
    print("reader got", len(got[0]))
""")


def test_opening_a_card_that_waits_lets_other_python_threads_run(tmp_path: Path) -> None:
    fifo = tmp_path / "speaker.raw"
    os.mkfifo(fifo)
    (tmp_path / "asoundrc").write_text(
        'pcm.fifospeaker {\n type file\n slave.pcm "null"\n'
        f' file "{fifo}"\n format "raw"\n}}\n')
    env = {**os.environ,
           "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{tmp_path / 'asoundrc'}"}
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(fifo)], env=env, cwd=Path.cwd(),
                              capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the card's open held the GIL: the thread it waited for never ran")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("reader got "), done.stdout
