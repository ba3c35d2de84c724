"""Waiting for a condition in real time, the one helper every test, peer and benchmark uses:
poll ``predicate`` until it returns something true or the time is up, then fail naming what
was awaited and the last value seen. The timeout is a limit, never a measured result. And
``run_apart``: asyncio.run beside a loop that already runs in this thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1,
             what: str = "condition") -> Any:
    """The first true value ``predicate`` returns; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def run_apart(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run(coro)`` on a thread of its own, its result or exception handed back: in the
    whole suite the browser tests' Playwright keeps an event loop running in the main thread
    for the session, where ``asyncio.run`` refuses to start."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=target, name="run_apart")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")
