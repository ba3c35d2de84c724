"""Ending the peers the tests start (jackd, Kamailio, RAUC's service and its bus): SIGTERM, a
bounded wait, then SIGKILL. Knows nothing about what the process is."""

from __future__ import annotations

import subprocess


def end(proc: subprocess.Popen | None, wait: float = 10.0) -> None:
    """Terminate ``proc`` if it still runs, wait up to ``wait`` seconds, then kill it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
