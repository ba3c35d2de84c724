"""A user-space network impairment relay for tests: UDP between two loopback endpoints with
seeded random loss and delay (and the reordering that jitter causes).

Used where the kernel has no netem (sch_netem); traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import heapq
import random
import select
import socket
import threading
import time


class ImpairedLink:
    """Packets sent to ``port_a`` reach ``b`` (from ``port_b``) and vice versa."""

    def __init__(self, a: tuple[str, int], b: tuple[str, int], loss: float = 0.05,
                 delay: float = 0.020, jitter: float = 0.010, seed: int = 1) -> None:
        self.a, self.b = a, b
        self.loss, self.delay, self.jitter = loss, delay, jitter
        self.rng = random.Random(seed)
        self.sock_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock_a.bind(("127.0.0.1", 0))
        self.sock_b.bind(("127.0.0.1", 0))
        self.port_a = self.sock_a.getsockname()[1]
        self.port_b = self.sock_b.getsockname()[1]
        self.dropped = 0
        self.forwarded = 0
        # RTP sequence numbers in the order they left the relay: the wire's ground truth
        self.delivered: dict[str, list[int]] = {"a>b": [], "b>a": []}
        self._queue: list[tuple[float, int, socket.socket, bytes, tuple[str, int]]] = []
        self._n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ImpairedLink:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            timeout = 0.005
            if self._queue:
                timeout = max(0.0, min(timeout, self._queue[0][0] - time.monotonic()))
            ready, _, _ = select.select([self.sock_a, self.sock_b], [], [], timeout)
            for s in ready:
                data, _ = s.recvfrom(2048)
                if self.rng.random() < self.loss:
                    self.dropped += 1
                    continue
                out, dest = (self.sock_b, self.b) if s is self.sock_a else (self.sock_a, self.a)
                due = time.monotonic() + self.delay + self.rng.uniform(-self.jitter,
                                                                        self.jitter)
                self._n += 1
                heapq.heappush(self._queue, (due, self._n, out, data, dest))
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, out, data, dest = heapq.heappop(self._queue)
                out.sendto(data, dest)
                self.forwarded += 1
                if len(data) >= 12 and data[0] >> 6 == 2 and not 72 <= data[1] & 0x7F <= 76:
                    self.delivered["a>b" if dest == self.b else "b>a"].append(
                        int.from_bytes(data[2:4], "big"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock_a.close()
        self.sock_b.close()
