"""The impairment relay the speech-quality figures rest on (devtools.impair): real UDP on
loopback, losses counted and shaped as configured, seeded so a run repeats exactly."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from devtools.impair import ImpairedLink

pytestmark = pytest.mark.integration


def send_through(loss: float, burst: float | None, seed: int, n: int = 4000,
                 delay: float = 0.001, jitter: float = 0.0) -> tuple[ImpairedLink, list[int]]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    b.settimeout(0.5)
    link = ImpairedLink(a.getsockname(), None, loss=loss, burst=burst, delay=delay,
                        jitter=jitter, seed=seed, directions=("a>b",)).start()
    got: list[int] = []
    try:
        b.sendto(b"hello", ("127.0.0.1", link.port_b))  # the relay learns b
        a.recvfrom(100)
        def receive() -> None:
            while True:
                try:
                    data, _ = b.recvfrom(2048)
                except TimeoutError:
                    return
                got.append(int.from_bytes(data[2:4], "big"))

        reader = threading.Thread(target=receive)
        reader.start()
        for k in range(n):
            a.sendto(bytes([0x80, 0]) + k.to_bytes(2, "big") + bytes(168), ("127.0.0.1",
                                                                             link.port_a))
            if k % 20 == 19:
                time.sleep(0.002)  # do not overrun the socket buffers
        reader.join(30)
    finally:
        link.stop()
        a.close()
        b.close()
    return link, got


def bursts(got: list[int], n: int) -> list[int]:
    present = set(got)
    runs, run = [], 0
    for k in range(n):
        if k in present:
            if run:
                runs.append(run)
            run = 0
        else:
            run += 1
    return runs + ([run] if run else [])


def test_random_and_bursty_loss_are_counted_and_shaped() -> None:
    n = 4000
    link, got = send_through(0.03, None, seed=3, n=n)
    assert link.dropped_by["a>b"] == n - len(got) and link.received_by["a>b"] == n
    assert 0.02 * n <= link.dropped <= 0.04 * n
    random_runs = bursts(got, n)
    assert sum(random_runs) / len(random_runs) < 1.3  # independent losses rarely touch

    link, got = send_through(0.03, 3.0, seed=3, n=n)
    assert link.dropped == n - len(got)
    assert 0.015 * n <= link.dropped <= 0.05 * n
    runs = bursts(got, n)
    assert 2.2 <= sum(runs) / len(runs) <= 4.0, runs  # Gilbert-Elliott: mean burst 3

    again, got_again = send_through(0.03, 3.0, seed=3, n=n)
    assert got_again == got  # the seed fixes the losses


def test_jitter_reorders_and_loses_nothing() -> None:
    link, got = send_through(0.0, None, seed=1, n=400, delay=0.040, jitter=0.020)
    assert sorted(got) == list(range(400)) and link.dropped == 0
    assert got != sorted(got)  # 40 ms of spread at this rate reorders
