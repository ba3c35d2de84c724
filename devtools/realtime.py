"""Real-time scheduling for the test harness's own pacing threads (a far end's RTP sender, the
impairment relay): SCHED_FIFO below the box's media loop (priority 10), so that the "clean"
conditions stay clean on a loaded 2-core host. Knows nothing of the firmware.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

PRIORITY = 5  # below the box's loop (media.realtime_priority 10): the box is never preempted


@contextmanager
def realtime(priority: int = PRIORITY) -> Iterator[bool]:
    """SCHED_FIFO for the calling thread while inside; yields whether it took (root only),
    and restores the thread's policy afterwards."""
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setscheduler(0, policy, param)
