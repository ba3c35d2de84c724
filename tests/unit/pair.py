"""In-memory harness: two sans-I/O user agents wired back to back, with a virtual clock.

Like h11's ConnectionPair: no sockets, no real time. ``pump()`` moves datagrams both ways (each
through the real parser and serialiser) and fires timers as the clock is advanced. A ``drop``
predicate lets a test lose chosen datagrams to exercise retransmission.
"""

from __future__ import annotations

from collections.abc import Callable

from firmware.sip.sdp import LocalMedia
from firmware.sip.transaction import TimerConfig
from firmware.sip.ua import UAConfig, UserAgent

A_ADDR = ("127.0.0.1", 5070)
B_ADDR = ("127.0.0.2", 5080)
FAST = TimerConfig(t1=0.5, t2=4.0, t4=5.0)


def media(port: int) -> LocalMedia:
    return LocalMedia("127.0.0.1", port)


class Pair:
    def __init__(self, a_cfg: dict | None = None, b_cfg: dict | None = None) -> None:
        base = dict(register=False, keepalive="off", timers=FAST)
        self.a = UserAgent(UAConfig(server=B_ADDR[0], port=B_ADDR[1], username="a",
                                    **{**base, **(a_cfg or {})}), A_ADDR)
        self.b = UserAgent(UAConfig(server=A_ADDR[0], port=A_ADDR[1], username="b",
                                    **{**base, **(b_cfg or {})}), B_ADDR)
        self.now = 0.0
        self.wire: list[tuple[str, bytes]] = []  # ("a>b" | "b>a", datagram)
        self.drop: Callable[[str, bytes], bool] = lambda direction, data: False
        self.events: dict[str, list] = {"a": [], "b": []}

    def pump(self, until: float | None = None) -> None:
        """Deliver datagrams and fire timers until quiet (or the clock reaches ``until``)."""
        for _ in range(10_000):
            moved = False
            for src, dst, direction, dst_addr in ((self.a, self.b, "a>b", A_ADDR),
                                                  (self.b, self.a, "b>a", B_ADDR)):
                for data, _addr in src.datagrams_to_send():
                    moved = True
                    self.wire.append((direction, data))
                    if not self.drop(direction, data):
                        dst.receive_datagram(data, dst_addr, self.now)
            for name, ua in (("a", self.a), ("b", self.b)):
                while (ev := ua.next_event()) is not None:
                    self.events[name].append(ev)
            if moved:
                continue
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            if until is None or not timers or min(timers) > until:
                if until is not None:
                    self.now = max(self.now, until)
                return
            self.now = max(self.now, min(timers))
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
        raise AssertionError("pair did not settle")

    def advance(self, seconds: float) -> None:
        self.pump(until=self.now + seconds)

    def sent(self, direction: str, start: bytes) -> list[bytes]:
        return [d for dr, d in self.wire if dr == direction and d.startswith(start)]
