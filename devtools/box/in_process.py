"""The box in-process for the appliance and browser tests: the firmware's own ``App`` on its
own event-loop thread, on a configuration from ``box_config``, with gpiozero's MockFactory as
its pins and ALSA PCMs from the tests' asoundrc. Not a stand-in for the firmware: it is the
firmware's App, with only the pin factory injected."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from ..waiting import wait_for
from .config import LIVE_SIP, write_config

PINS = {"call": 17, "answer": 27, "hangup": 22, "talk": 23, "registered": 5, "ringing": 6,
        "calling": 13, "in_call": 19, "error": 12, "relay": 26}


class Box:
    """The intercom application running on its own event loop thread, pins simulated."""

    def __init__(self, tmp: Path, pbx_port: int, **extra: Any) -> None:
        from firmware.app import App
        from firmware.config import load_config

        path = write_config(
            tmp, pbx_port, sip={**LIVE_SIP, "retry_max": 2, **extra.pop("sip", {})},
            audio={"capture": "box_mic", "playback": "box_speaker", **extra.pop("audio", {})},
            calls={"door_code": "*1", **extra.pop("calls", {})},
            gpio={"pin_factory": "mock", "relay": {"seconds": 1}})
        self.factory = MockFactory()
        self.app = App(load_config(path), pin_factory=self.factory)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self.app.start(), 15)

    def _call(self, coro: Any, timeout: float = 5) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def status(self) -> dict:
        return self._call(self.app.handle_command({"cmd": "status"}))

    def wait_state(self, state: str, timeout: float = 15) -> dict:
        return wait_for(lambda: (s := self.status())["state"] == state and s, timeout, 0.05,
                        f"state {state}")

    def pin(self, name: str) -> Any:
        return self.factory.pin(PINS[name])

    def press(self, name: str) -> None:
        pin = self.pin(name)
        pin.drive_low()
        time.sleep(0.15)
        pin.drive_high()

    def answer_call_from(self, phone: Any, pbx_port: int) -> dict:
        """``phone`` (a baresip) dials the box through the PBX; the box rings and its answer
        button takes the call. Returns the status once in the call."""
        phone.command("dial", f"sip:5002@127.0.0.1:{pbx_port}")
        self.wait_state("ringing")
        self.press("answer")
        phone.wait_event("CALL_ESTABLISHED", 10)
        return self.wait_state("in_call")

    def stop(self) -> None:
        self._call(self.app.stop(), 15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def toggles(pin: Any, since: int) -> int:
    """State changes recorded after the first ``since`` entries of the pin's history (MockPin
    timestamps are intervals, so the history is indexed by position)."""
    states = [s.state for s in pin.states[max(since - 1, 0):]]
    return sum(1 for a, b in zip(states, states[1:], strict=False) if a != b)
