"""A media stream's packets as a loopback receiver sees them on the wire: the stream started
on its own thread towards a receiver that takes kernel arrival timestamps (SO_TIMESTAMPNS), the
send-interval error on the 20 ms grid, how often the loop thread woke (the kernel's count of its
context switches), and the slow capture processor test double built from
``tests/integration/slow_processor.pyx``. Shared by the host's wire-timing tests and the
script the real-kernel guest runs (``tests/kernel/pacing_guest.py``); knows no fixture."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from firmware import _rtpcore as core
from firmware.media.stream import RtpPorts

REPO = Path(__file__).resolve().parents[1]
SO_TIMESTAMPNS = 35  # Linux (x86 and arm64); SCM_TIMESTAMPNS has the same value
PERIOD_NS = 20_000_000
TONE_HZ = 1000.0
BUILD = """
import sys
from Cython.Build import cythonize
from setuptools import Extension, setup
setup(script_args=["build_ext", "--inplace", "-q"],
      ext_modules=cythonize([Extension("slow_processor", ["slow_processor.pyx"])],
                            include_path=[sys.argv[1]], language_level=3, quiet=True))
"""


def build_slow_processor(out: Path) -> Path:
    """The slow processor compiled in ``out`` against this checkout's ``_processor.pxd``."""
    shutil.copy(REPO / "tests" / "integration" / "slow_processor.pyx", out)
    r = subprocess.run([sys.executable, "-c", BUILD, str(REPO)], cwd=out, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    built = sorted(out.glob("slow_processor*.so"))
    assert built, list(out.iterdir())
    return built[0]


def load_slow_processor(path: Path) -> Any:
    """The SlowProcessor class from a module ``build_slow_processor`` made."""
    spec = importlib.util.spec_from_file_location("slow_processor", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SlowProcessor


def tone_cycle() -> bytes:
    """One second of a 1 kHz tone: a whole number of cycles, so it repeats seamlessly."""
    t = np.arange(8000) / 8000
    return (np.sin(2 * np.pi * TONE_HZ * t) * 8000).astype("<i2").tobytes()


def receive(rx: socket.socket, seconds: float) -> list[tuple[int, bytes]]:
    """(kernel arrival ns, datagram) for ``seconds`` from the first datagram."""
    got: list[tuple[int, bytes]] = []
    end = None
    while end is None or time.monotonic() < end:
        try:
            data, anc, _, _ = rx.recvmsg(2048, 64)
        except TimeoutError:
            break
        stamp = next((struct.unpack("qq", p[:16]) for lvl, typ, p in anc
                      if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS), None)
        assert stamp is not None, "no kernel timestamp"
        got.append((stamp[0] * 1_000_000_000 + stamp[1], data))
        if end is None:
            end = time.monotonic() + seconds
    return got


def switches(tid: int) -> int:
    """How many times the thread ``tid`` of this process gave up or lost the CPU so far."""
    text = Path(f"/proc/self/task/{tid}/status").read_text()
    return sum(int(line.split()[1]) for line in text.splitlines()
               if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))


def stream_to_receiver(processor: Any, seconds: float, alsa: Any = None, priority: int = 10,
                       kernel_pacing: bool = False) -> tuple[list[tuple[int, bytes]], dict]:
    """The stream (the tone cycled, or the ``alsa`` card's microphone: the card loop) to a
    receiver; ``kernel_pacing``: the stream hands its packets to the kernel stamped with their
    times. The stats carry ``wakeups_per_s``: the loop thread's context switches a second
    while the receiver listened."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx_rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # RTCP lands here, not astray
    ports = RtpPorts("127.0.0.1")
    try:
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rx.bind(("127.0.0.1", 0))
        rx_rtcp.bind(("127.0.0.1", 0))
        rx.settimeout(2.0)
        stream = core.MediaStream(ports.rtp.fileno(), ports.rtcp.fileno(), processor=processor)
        if kernel_pacing:
            assert stream.use_kernel_pacing(), "the kernel refused SO_TXTIME"
        if alsa is None:
            stream.set_capture_cycle(tone_cycle())
            stream.discard_playback = True
        else:
            stream.use_card(alsa)
        stream.set_remote("127.0.0.1", rx.getsockname()[1], rx_rtcp.getsockname()[1])
        loop = threading.Thread(target=stream.run, args=(priority,), daemon=True,
                                name="rtp-loop")
        loop.start()
        try:
            assert loop.native_id is not None
            got = receive(rx, 1.0)  # the loop learns the cost from the first frames
            before, t0 = switches(loop.native_id), time.monotonic()
            got += receive(rx, seconds - 1.0)
            wakeups = (switches(loop.native_id) - before) / (time.monotonic() - t0)
        finally:
            stream.stop()
            loop.join(2.0)
        assert not loop.is_alive()
        return got, {**stream.stats(), "wakeups_per_s": wakeups}
    finally:
        rx.close()
        rx_rtcp.close()
        ports.close()


def grid_errors(rtp: list[tuple[int, Any]]) -> tuple[float, float]:
    """No gap in the sequence numbers; the send-interval error's p50 and p90 (µs) at the
    receiver after the first half second (the loop learns the cost from the first frames)."""
    seqs = [p[2] for _, p in rtp]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:], strict=False)), "a gap"
    arrivals = [t for t, _ in rtp[25:]]
    errors = sorted(abs(b - a - PERIOD_NS) / 1000 for a, b in zip(arrivals, arrivals[1:],
                                                                 strict=False))
    return errors[len(errors) // 2], errors[int(0.9 * (len(errors) - 1))]
