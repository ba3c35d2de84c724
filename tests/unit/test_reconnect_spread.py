"""The stream transport's reconnect (``firmware/net.py``) is spread at random: boxes whose TCP
connections all dropped at the same instant (the PBX restarted) must not all knock again at the
same instants. Real ``TcpTransport`` objects retry a real loopback port nobody listens on; each
attempt is timed as it starts."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable

from devtools.loopback import free_port
from devtools.waiting import run_apart
from firmware import net
from firmware.config import SipSettings


async def _attempts(port: int, rand: Callable[[], float], seconds: float,
                    retry_max: float = 60.0) -> list[float]:
    loop = asyncio.get_running_loop()
    sip = SipSettings(server="127.0.0.1", port=port, username="5002", transport="tcp",
                      retry_max=retry_max)
    t = await net.TcpTransport.create(sip, ("127.0.0.1", port), "0.0.0.0")
    t.rand = rand
    times: list[float] = []
    real = t.connect

    async def timed_connect() -> None:
        times.append(loop.time())
        await real()

    t.connect = timed_connect  # type: ignore[method-assign]
    task = loop.create_task(t._reconnect())
    await asyncio.sleep(seconds)
    t._closing = True
    task.cancel()
    return times


def _fleet(rands: list[Callable[[], float]], seconds: float = 2.2) -> list[list[float]]:
    port = free_port(socket.SOCK_STREAM)  # refused: nothing listens there

    async def main() -> list[list[float]]:
        start = asyncio.get_running_loop().time()
        runs = await asyncio.gather(*(_attempts(port, r, seconds) for r in rands))
        return [[t - start for t in run] for run in runs]

    return run_apart(main())


def test_reconnects_of_boxes_that_dropped_together_spread_apart() -> None:
    herd = _fleet([lambda: 0.0] * 12)
    spread = _fleet([random.Random(i).random for i in range(12)])
    # without the spread every box knocks at 0, 0.5 and 1.5 s: the same instants
    third = [run[2] for run in herd]
    assert max(third) - min(third) < 0.15, third
    # with it each wait is 50-100 % of the nominal 0.5, 1, 2 ... s, drawn per box. A timer
    # fires late, never early: the upper bound leaves a loaded machine 0.25 s (the image build
    # beside the suite once made a 0.5 s wait 0.605)
    for run in spread:
        gaps = [b - a for a, b in zip(run, run[1:], strict=False)]
        assert len(gaps) >= 2
        for gap, nominal in zip(gaps, (0.5, 1.0, 2.0), strict=False):
            assert 0.5 * nominal - 0.05 <= gap <= nominal + 0.25, (gaps, nominal)
    third = [run[2] for run in spread]
    assert max(third) - min(third) >= 0.3, f"the third attempts fell within {third}"


def test_reconnect_waits_no_longer_than_sip_retry_max() -> None:
    """A box whose PBX stayed away for minutes is back within ``sip.retry_max`` of its return
    over TCP too, as over UDP (not after the transport's own 60 s)."""
    port = free_port(socket.SOCK_STREAM)

    async def main() -> list[float]:
        return await _attempts(port, lambda: 0.0, 4.3, retry_max=1.0)

    times = run_apart(main())
    gaps = [round(b - a, 1) for a, b in zip(times, times[1:], strict=False)]
    assert gaps[:4] == [0.5, 1.0, 1.0, 1.0], gaps
