"""The 20 ms packet senders compared by the loop benchmark, each run as its own process:

- ``core``: the Cython MediaStream (absolute CLOCK_MONOTONIC deadlines, no GIL);
- ``asyncio``: a pure-Python asyncio loop scheduling each packet at an absolute deadline;
- ``pyvoip``: the relative ``sleep(0.02 - elapsed)`` loop of pyVoIP and its kin.

Usage: python -m benchmarks.senders KIND PORT SECONDS [RT_PRIORITY]
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sys
import time

from firmware import _rtpcore as core

PTIME = 0.020


def _packet(seq: int, ts: int, ssrc: int, payload: bytes) -> bytes:
    return core.rtp_pack(0, seq == 0, seq, ts, ssrc, payload)


def _thread_counters(tid: int) -> tuple[int, int]:
    """(CPU ns, voluntary context switches = wake-ups) of one of this process's threads."""
    cpu = int(open(f"/proc/self/task/{tid}/schedstat").read().split()[0])
    for line in open(f"/proc/self/task/{tid}/status"):
        if line.startswith("voluntary_ctxt_switches:"):
            return cpu, int(line.split()[1])
    return cpu, 0


def run_core(port: int, seconds: float, rt: int) -> None:
    """Prints one JSON line: the scheduling it got, the loop thread's CPU and wake-ups, and
    what the loop measured of itself (absent from builds that do not measure it)."""
    from firmware.events import MediaParams
    from firmware.media.audio import NullSink, ToneSource
    from firmware.media.stream import RtpPorts, RtpSession, StreamSettings

    ports = RtpPorts("127.0.0.1")
    spin = int(os.environ.get("BENCH_SPIN_US", "0"))
    session = RtpSession(ports, ToneSource(440), NullSink(),
                         StreamSettings(realtime_priority=rt, spin_us=spin,
                                        echo_canceller=os.environ.get("BENCH_AEC", "off")))
    session.start(MediaParams("127.0.0.1", port, 0, "PCMU", 101, 20, "sendonly"))
    tid = session._loop_thread.native_id if session._loop_thread else None
    time.sleep(0.5)  # the loop's first ticks (and the receiver's first packet) out of the count
    before = _thread_counters(tid) if tid else (0, 0)
    t0 = time.monotonic()
    time.sleep(max(0.0, seconds - 0.5))
    after = _thread_counters(tid) if tid else (0, 0)
    span = time.monotonic() - t0
    aec = session.canceller_stats()  # the echo canceller that really ran, if any
    session.stop()
    st = session.final_stats or {}
    print(json.dumps({
        "scheduling": ("realtime" if st.get("realtime") else "normal")
        + (f", {aec['kind']} {aec['frames']} frames" if aec else ""),
        "loop_cpu_ms_per_min": (after[0] - before[0]) / 1e6 * 60 / span,
        "loop_wakeups_per_s": (after[1] - before[1]) / span,
        **{k: st[k] for k in ("work_p99_us", "send_lag_p99_us", "send_lag_max_us", "lead_us",
                              "late_sends") if k in st}}))


def run_asyncio(port: int, seconds: float, rt: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ssrc = random.getrandbits(32)
    pcm = bytes(320)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        start = loop.time() + PTIME
        count = int(seconds / PTIME)

        def tick(k: int) -> None:
            sock.sendto(_packet(k, 160 * k, ssrc, core.encode_ulaw(pcm)), ("127.0.0.1", port))
            if k + 1 < count:
                loop.call_at(start + (k + 1) * PTIME, tick, k + 1)
            else:
                done.set_result(None)

        loop.call_at(start, tick, 0)
        await done

    asyncio.run(main())


def run_pyvoip(port: int, seconds: float, rt: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ssrc = random.getrandbits(32)
    pcm = bytes(320)
    end = time.time() + seconds
    k = 0
    while time.time() < end:
        last = time.time()
        sock.sendto(_packet(k, 160 * k, ssrc, core.encode_ulaw(pcm)), ("127.0.0.1", port))
        k += 1
        elapsed = time.time() - last
        time.sleep(max(0.0, PTIME - elapsed))


def main() -> None:
    kind, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rt = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    if rt and kind != "core":
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt))
    {"core": run_core, "asyncio": run_asyncio, "pyvoip": run_pyvoip}[kind](port, seconds, rt)


if __name__ == "__main__":
    main()
