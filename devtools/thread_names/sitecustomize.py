"""Put on a process's PYTHONPATH by a test: every Python thread names its OS thread after its
``threading`` name (``prctl(PR_SET_NAME)``, 15 bytes), as Python 3.14 does by itself, so that
``/proc/PID/task/*/comm`` shows from outside which Python threads the process runs (Python
3.11 leaves them all named after the program). Changes nothing else about the process."""

from __future__ import annotations

import ctypes
import threading

PR_SET_NAME = 15
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: names stay as they are
    _prctl = None
_inner = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def _named(self: threading.Thread) -> None:
    if _prctl is not None:
        _prctl(PR_SET_NAME, ctypes.c_char_p(self.name.encode()[:15]), 0, 0, 0)
    _inner(self)


threading.Thread._bootstrap_inner = _named  # type: ignore[attr-defined]
