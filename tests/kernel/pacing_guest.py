"""Run INSIDE the real-kernel guest (``tests/kernel/test_kernel_pacing.py`` boots it): the
box's media loop on Debian's kernel, first with loopback's own ``noqueue``, then with ``fq`` at
its root, and what a receiver on loopback saw of each, written as JSON for the host to judge.

- the box's own decision (``firmware.media.pacing.egress``) before and after fq;
- packets stamped with their times (SO_TXTIME) on noqueue: they leave when handed over (the
  negative control: the stamps alone do nothing);
- the same on fq, and the loop pacing itself on fq (no stamps): the grid, the tone, and how
  often the loop thread woke — the test double costs 8 ms every other frame, so a loop that
  paces itself must wake a second time to send;
- a call's media as the application starts it (``RtpSession``, the default speex canceller),
  which decides for itself;
- the card loop (alsa-lib's jack plugin on jackd's dummy driver, started in the guest; speex
  on), stamped on fq and paced by the loop: the grid, the room's tone, the wake-ups.

Usage: python -m tests.kernel.pacing_guest SLOW_PROCESSOR_SO OUT_JSON"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from firmware import _rtpcore as core
from firmware.core import _aec
from firmware.events import MediaParams
from firmware.media.audio import NullSink, ToneSource
from firmware.media.pacing import egress
from firmware.media.stream import RtpPorts, RtpSession, StreamSettings

from ..audio import pcm_array, peak_hz, tone_snr_db
from ..wire_grid import (
    SO_TIMESTAMPNS,
    TONE_HZ,
    grid_errors,
    load_slow_processor,
    receive,
    stream_to_receiver,
    switches,
)

SECONDS = 4.0
KEEP = ("kernel_pacing", "lead_us", "send_lag_p99_us", "late_sends", "send_errors",
        "work_p99_us", "ticks", "sent", "pacing", "egress", "wakeups_per_s", "card",
        "audio_xruns", "silent_ticks")


def judged(got: list[tuple[int, bytes]], st: dict, hz: float = TONE_HZ) -> dict[str, Any]:
    """What the receiver saw: the grid (after the first half second), the tone by FFT."""
    rtp = [(t, core.rtp_parse(d)) for t, d in got if d[1] & 0x7F == 0]
    p50, p90 = grid_errors(rtp)
    pcm = pcm_array(b"".join(core.decode_ulaw(p[5]) for _, p in rtp[25:]))
    return {"packets": len(rtp), "grid_p50_us": p50, "grid_p90_us": p90,
            "peak_hz": peak_hz(pcm), "snr_db": tone_snr_db(pcm, hz),
            **{k: st[k] for k in KEEP if k in st}}


def card_streams(tmp: Path) -> dict[str, Any]:
    """The card loop with speex, stamped and then loop-paced, on one jackd in the guest."""
    import pytest

    from firmware.core._card import Card as AlsaCard

    from ..integration.test_card_loop import BOX_PRIORITY, MIC_HZ, Card

    tmp.mkdir(exist_ok=True)
    env = pytest.MonkeyPatch()  # the jack plugin's ALSA configuration, for this process
    jack = Card(tmp, env, 80)
    out: dict[str, Any] = {}
    try:
        for name, stamped in (("card_stamped_on_fq", True), ("card_loop_paced_on_fq", False)):
            alsa = AlsaCard("boxcard", "boxcard")
            try:
                got, st = stream_to_receiver(_aec.create("speex"), SECONDS, alsa, BOX_PRIORITY,
                                             kernel_pacing=stamped)
            finally:
                alsa.close()
            out[name] = judged(got, st, MIC_HZ)
    finally:
        jack.stop()
        env.undo()
    return out


def slow_stream(slow: Any, kernel_pacing: bool) -> dict[str, Any]:
    proc = slow(_aec.create("speex"), 8.0, 2)  # 0, 8, 0, 8 ms ... of work before the packet
    got, st = stream_to_receiver(proc, SECONDS, kernel_pacing=kernel_pacing)
    return {**judged(got, st), "burned": proc.burned}


def session_call() -> dict[str, Any]:
    """A call's media as the application runs it: the tone to a receiver, speex on."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2.0)
    ports = RtpPorts("127.0.0.1")
    session = RtpSession(ports, ToneSource(TONE_HZ), NullSink(),
                         StreamSettings(realtime_priority=10, echo_canceller="speex"))
    try:
        session.start(MediaParams("127.0.0.1", rx.getsockname()[1], 0, "PCMU", 101, 20,
                                  "sendrecv"))
        loop = next(t for t in threading.enumerate() if t.name == "rtp-loop")
        assert loop.native_id is not None
        got = receive(rx, 1.0)
        before, t0 = switches(loop.native_id), time.monotonic()
        got += receive(rx, SECONDS - 1.0)
        wakeups = (switches(loop.native_id) - before) / (time.monotonic() - t0)
        st = {**session.stats(), "wakeups_per_s": wakeups}
    finally:
        session.stop()
        rx.close()
        ports.close()
    return judged(got, st)


def main(slow_so: str, out: str) -> None:
    slow = load_slow_processor(Path(slow_so))
    seen: dict[str, Any] = {"kernel": Path("/proc/version").read_text().strip()}
    way = egress("127.0.0.1")
    seen["egress_before"] = dataclasses.asdict(way) if way else None
    seen["stamped_on_noqueue"] = slow_stream(slow, True)
    r = subprocess.run(["tc", "qdisc", "replace", "dev", "lo", "root", "fq"],
                       capture_output=True, text=True)
    seen["tc"] = r.returncode, r.stderr.strip()
    way = egress("127.0.0.1")
    seen["egress_fq"] = dataclasses.asdict(way) if way else None
    seen["stamped_on_fq"] = slow_stream(slow, True)
    seen["loop_paced_on_fq"] = slow_stream(slow, False)
    seen["session_on_fq"] = session_call()
    seen.update(card_streams(Path(out).parent / "card"))
    Path(out).write_text(json.dumps(seen, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
