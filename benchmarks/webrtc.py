"""The browser console's two latencies, each beside the desk phone's in the same run:

- call button -> ringing: the box's call button (MockFactory pin) dials reception, Asterisk's
  ring group forks the call to the console (Chromium, SIP over WebSocket, WebRTC) and to the
  desk phone (baresip as 5001); both are timed from the same press, so the reference shares the
  box and Asterisk and differs only in the last hop and the phone.
- Open door -> relay: the console's Open door button (the code as RFC 4733 through the
  browser's RTCDTMFSender, via Asterisk) until the box's relay pin goes high; reference: baresip
  in the same kind of call sending the same code (ctrl_tcp ``sndcode``).

The page stamps its events with ``performance.timeOrigin + performance.now()``; its clock's
offset from this process's is measured around evaluate() round trips and removed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from devtools.asterisk import PASSWORDS, Asterisk
from devtools.baresip import Baresip
from devtools.chromium import Chromium
from devtools.console_page import ConsolePage
from devtools.loopback import free_port
from devtools.waiting import wait_for

RELAY_PIN = 26  # the "plain" profile's relay
CALL_PIN = 17


class InProcessBox:
    """The intercom application with MockFactory pins on its own event-loop thread."""

    def __init__(self, tmp: Path, pbx_port: int) -> None:
        from gpiozero.pins.mock import MockFactory

        from firmware.app import App
        from firmware.config import parse_config

        cfg = parse_config(json.dumps({
            "sip": {"server": "127.0.0.1", "port": pbx_port, "username": "5002",
                    "password": PASSWORDS["5002"], "display_name": "Door",
                    "local_port": free_port(), "register_expires": 60},
            "calls": {"door_code": "*1", "default_target": "5001"},
            "control": {"socket": str(tmp / "control.sock")}, "media": {"rtp_port": 0},
            "audio": {"capture": "tone:700", "playback": "null"},
            "gpio": {"pin_factory": "mock", "relay": {"seconds": 0.2}}}))
        self.factory = MockFactory()
        self.app = App(cfg, pin_factory=self.factory)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.app.start(), self.loop).result(15)

    def state(self) -> str:
        return self.app.state

    def wait_state(self, state: str, timeout: float = 15) -> None:
        wait_for(lambda: self.app.state == state, timeout, 0.01, f"box state {state}")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def page_clock_offset_ms(page: ConsolePage) -> float:
    """Page epoch clock minus this process's, from the tightest of 15 round trips."""
    best: tuple[float, float] | None = None
    for _ in range(15):
        t0 = time.time_ns() / 1e6
        stamp = page.page.evaluate("performance.timeOrigin + performance.now()")
        t1 = time.time_ns() / 1e6
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, stamp - (t0 + t1) / 2)
    assert best is not None
    return best[1]


def baresip_event_time_ms(phone: Baresip, kind: str, timeout: float = 15) -> float:
    """When this process read baresip's ``kind`` event (ctrl_tcp), epoch ms."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in list(phone.events):
            if ev.get("event") and ev.get("type") == kind:
                phone.events.remove(ev)
                return ev["_t"]
        n = len(phone.events)
        phone._read()
        now = time.time_ns() / 1e6
        for ev in phone.events[n:]:
            ev["_t"] = now
    raise AssertionError(f"baresip: no {kind} within {timeout} s")


def relay_rise_ms(pin: Any, base_mono: float, mono_to_epoch: float, timeout: float = 10) -> float:
    """Epoch ms at which the MockPin went high (its history holds intervals since
    clear_states())."""
    wait_for(lambda: pin.state, timeout, 0.002, "the relay")
    elapsed = 0.0
    for st in pin.states[1:]:
        elapsed += st.timestamp
        if st.state:
            return (base_mono + elapsed + mono_to_epoch) * 1000
    raise AssertionError("relay history has no rising edge")


def _hang_up(box: InProcessBox, page: ConsolePage, n_events: int) -> None:
    pin = box.factory.pin(22)  # the plain profile's hangup button
    pin.drive_low()
    time.sleep(0.12)
    pin.drive_high()
    box.wait_state("idle")
    page.wait_event("ended", since=n_events)


def measure(n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"console_ring": [], "desk_ring": [], "console_door": [],
                                   "desk_door": []}
    tmp = Path(tempfile.mkdtemp(prefix="bench-webrtc-"))
    pbx = Asterisk(http_port=free_port(socket.SOCK_STREAM)).start()
    chromium = Chromium(tmp / "chromium").start()
    box = desk = None
    try:
        desk = Baresip(pbx, "5001", tmp=tmp / "baresip").start()
        page = ConsolePage(chromium, pbx).open(
            server=pbx.ws_url, user="5004", password=PASSWORDS["5004"], door="5002", code="*1")
        page.wait_status("registered")
        box = InProcessBox(tmp, pbx.port)
        box.wait_state("idle")
        offset = page_clock_offset_ms(page)
        call = box.factory.pin(CALL_PIN)
        relay = box.factory.pin(RELAY_PIN)
        mono_to_epoch = time.time() - time.monotonic()
        # call button -> ringing, console and desk phone from the same press
        for _ in range(n):
            box.wait_state("idle")
            time.sleep(0.3)
            desk.events.clear()
            k = page.event_count()
            t0 = time.time_ns() / 1e6
            call.drive_low()
            desk_t = baresip_event_time_ms(desk, "CALL_INCOMING")
            console_t = page.wait_event("incoming", since=k)["t"] - offset
            call.drive_high()
            out["console_ring"].append(console_t - t0)
            out["desk_ring"].append(desk_t - t0)
            box.wait_state("calling")  # the box's context answers nothing: it calls
            _hang_up(box, page, k)
            baresip_event_time_ms(desk, "CALL_CLOSED")
        # Open door -> relay, the console in the call
        box.wait_state("idle")
        desk.events.clear()
        k = page.event_count()
        call.drive_low()
        page.wait_ringing()
        call.drive_high()
        page.click("answer")
        page.wait_event("established", since=k)
        baresip_event_time_ms(desk, "CALL_CLOSED")
        time.sleep(1)
        for _ in range(n):
            relay.clear_states()
            base = relay._last_change
            m = page.event_count()
            page.click("open-door")
            click_t = page.wait_event("open-door-click", since=m)["t"] - offset
            out["console_door"].append(relay_rise_ms(relay, base, mono_to_epoch) - click_t)
            wait_for(lambda: not relay.state, 5, 0.01, "the relay pulse to end")
            time.sleep(0.4)
        _hang_up(box, page, k)
        # Open door -> relay, the desk phone in the call
        time.sleep(0.3)
        desk.events.clear()
        call.drive_low()
        baresip_event_time_ms(desk, "CALL_INCOMING")
        call.drive_high()
        desk.command("accept")
        baresip_event_time_ms(desk, "CALL_ESTABLISHED")
        box.wait_state("in_call")
        time.sleep(1)
        for _ in range(n):
            relay.clear_states()
            base = relay._last_change
            t0 = time.time_ns() / 1e6
            desk.command("sndcode", "*1")
            out["desk_door"].append(relay_rise_ms(relay, base, mono_to_epoch) - t0)
            wait_for(lambda: not relay.state, 5, 0.01, "the relay pulse to end")
            time.sleep(0.4)
        desk.command("hangup")
        box.wait_state("idle")
    finally:
        if box is not None:
            box.stop()
        if desk is not None:
            desk.stop()
        chromium.stop()
        pbx.cleanup()
    return out


def run(n: int = 20) -> list[dict]:
    m = measure(n)
    names = {
        "console_ring": "call button -> console ringing (Chromium, SIP over WebSocket)",
        "desk_ring": "call button -> desk phone ringing (baresip 5001, reference)",
        "console_door": "Open door click -> relay pin (RTCDTMFSender *1 via Asterisk)",
        "desk_door": "desk phone sends *1 -> relay pin (baresip sndcode, reference)",
    }
    rows = []
    for key, name in names.items():
        lat = sorted(m[key])
        rows.append({"key": key, "path": name, "n": len(lat), "median_ms": statistics.median(lat),
                     "p90_ms": lat[int(0.9 * (len(lat) - 1))], "max_ms": lat[-1]})
    return rows


def table(rows: list[dict]) -> str:
    ref = {"console_ring": "desk_ring", "desk_ring": "desk_ring",
           "console_door": "desk_door", "desk_door": "desk_door"}
    median = {r["key"]: r["median_ms"] for r in rows}
    out = ["| path | n | median ms | p90 ms | max ms | vs reference |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['path']} | {r['n']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
                   f"{r['max_ms']:.1f} | {r['median_ms'] / median[ref[r['key']]]:.2f}x |")
    return "\n".join(out)
