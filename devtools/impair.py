"""A user-space network impairment relay for tests and benchmarks: UDP between two loopback
endpoints with seeded loss (independent, or bursty after Gilbert and Elliott) and delay with
jitter (which reorders packets once the jitter exceeds their spacing), every decision counted.

Used where the kernel has no netem (sch_netem); traffic stays on 127.0.0.1. Knows nothing of
the firmware: it moves datagrams and remembers the RTP sequence numbers it delivered.
"""

from __future__ import annotations

import heapq
import random
import select
import socket
import threading
import time

from .realtime import realtime


class ImpairedLink:
    """Packets sent to ``port_a`` reach ``b`` (from ``port_b``) and vice versa.

    ``loss``: long-run fraction lost. ``burst``: None for independent losses, else the mean
    length (packets) of a loss burst: a two-state Gilbert-Elliott chain (every packet lost in the
    bad state, none in the good one) with that mean sojourn in the bad state and ``loss`` as its
    stationary share. Delay: ``delay`` +- ``jitter`` seconds, uniform, drawn per packet.
    ``b=None``: the b side is learnt from the first packet that reaches ``port_b`` (a PBX whose
    RTP port the test does not know in advance); until then a-to-b packets are counted in
    ``unrouted``. ``directions``: which ways are impaired ("a>b", "b>a" or both).
    """

    def __init__(self, a: tuple[str, int], b: tuple[str, int] | None, loss: float = 0.05,
                 delay: float = 0.020, jitter: float = 0.010, seed: int = 1,
                 burst: float | None = None, directions: tuple[str, ...] = ("a>b", "b>a"),
                 ) -> None:
        if not 0 <= loss < 1 or (burst is not None and burst < 1) or jitter > delay:
            raise ValueError("loss in [0, 1), burst >= 1 packet, jitter <= delay")
        self.a, self.b = a, b
        self.loss, self.delay, self.jitter, self.burst = loss, delay, jitter, burst
        self.directions = directions
        self.rng = random.Random(seed)
        self._bad = {"a>b": False, "b>a": False}
        self.sock_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock_a.bind(("127.0.0.1", 0))
        self.sock_b.bind(("127.0.0.1", 0))
        self.port_a = self.sock_a.getsockname()[1]
        self.port_b = self.sock_b.getsockname()[1]
        self.dropped = 0
        self.forwarded = 0
        self.unrouted = 0
        self.dropped_by = {"a>b": 0, "b>a": 0}
        self.received_by = {"a>b": 0, "b>a": 0}
        # RTP sequence numbers in the order they left the relay: the wire's ground truth
        self.delivered: dict[str, list[int]] = {"a>b": [], "b>a": []}
        self._queue: list[tuple[float, int, socket.socket, bytes, tuple[str, int]]] = []
        self._n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="impair")

    def start(self) -> ImpairedLink:
        self._thread.start()
        return self

    def _lost(self, way: str) -> bool:
        if way not in self.directions or self.loss == 0:
            return False
        if self.burst is None:
            return self.rng.random() < self.loss
        # Gilbert-Elliott: leave bad with 1/burst; enter it so that its share is ``loss``
        r = 1.0 / self.burst
        p = r * self.loss / (1.0 - self.loss)
        bad = self._bad[way]
        bad = (self.rng.random() >= r) if bad else (self.rng.random() < p)
        self._bad[way] = bad
        return bad

    def _run(self) -> None:
        with realtime():  # the relay's own timing is not the condition under test
            self._relay()

    def _relay(self) -> None:
        while not self._stop.is_set():
            timeout = 0.005
            if self._queue:
                timeout = max(0.0, min(timeout, self._queue[0][0] - time.monotonic()))
            ready, _, _ = select.select([self.sock_a, self.sock_b], [], [], timeout)
            for s in ready:
                data, src = s.recvfrom(2048)
                if s is self.sock_b and self.b is None:
                    self.b = src
                way = "a>b" if s is self.sock_a else "b>a"
                if way == "a>b" and self.b is None:
                    self.unrouted += 1
                    continue
                self.received_by[way] += 1
                if self._lost(way):
                    self.dropped += 1
                    self.dropped_by[way] += 1
                    continue
                out, dest = (self.sock_b, self.b) if way == "a>b" else (self.sock_a, self.a)
                assert dest is not None
                wobble = self.rng.uniform(-self.jitter, self.jitter) if way in \
                    self.directions else 0.0
                due = time.monotonic() + self.delay + wobble
                self._n += 1
                heapq.heappush(self._queue, (due, self._n, out, data, dest))
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, out, data, dest = heapq.heappop(self._queue)
                out.sendto(data, dest)
                self.forwarded += 1
                if len(data) >= 12 and data[0] >> 6 == 2 and not 72 <= data[1] & 0x7F <= 76:
                    self.delivered["a>b" if out is self.sock_b else "b>a"].append(
                        int.from_bytes(data[2:4], "big"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock_a.close()
        self.sock_b.close()
