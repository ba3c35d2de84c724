"""Stop one OS thread of a running process for a while, leaving its other threads running.

A real stall, not a stand-in: a helper process attaches to the thread with ptrace
(PTRACE_SEIZE, then PTRACE_INTERRUPT stops that thread alone), reports once the kernel says it is
stopped, and detaches when told to (or after a safety timeout), which lets the thread go on.
A process cannot ptrace its own threads, hence the helper. Needs CAP_SYS_PTRACE (root) or a
permissive Yama ptrace_scope.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_HELPER = r"""
import ctypes, os, select, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
tid, limit = int(sys.argv[1]), float(sys.argv[2])
def ptrace(request, what):
    if libc.ptrace(request, tid, None, None) == -1:
        err = ctypes.get_errno()
        sys.exit(f"ptrace {what} of thread {tid} refused: {os.strerror(err)}")
ptrace(0x4206, "SEIZE")
ptrace(0x4207, "INTERRUPT")
os.waitpid(tid, 0x40000000)  # __WALL: returns once the thread is in its ptrace stop
print("stopped", flush=True)
select.select([sys.stdin], [], [], limit)
ptrace(17, "DETACH")
"""


@contextmanager
def thread_stopped(tid: int, limit: float = 10.0) -> Iterator[None]:
    """The OS thread ``tid`` (``threading.Thread.native_id``) is stopped inside the block."""
    helper = subprocess.Popen([sys.executable, "-c", _HELPER, str(tid), str(limit)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert helper.stdout is not None and helper.stdin is not None
    line = helper.stdout.readline()
    if line.strip() != "stopped":
        helper.wait(5)
        raise RuntimeError(f"could not stop thread {tid}: {helper.stderr.read().strip()}")
    try:
        yield
    finally:
        helper.stdin.close()  # the helper detaches: the thread runs on
        if helper.wait(5) != 0:
            raise RuntimeError(f"detaching from thread {tid}: {helper.stderr.read().strip()}")
