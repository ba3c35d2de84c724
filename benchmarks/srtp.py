"""What SRTP costs: CPU per call-minute with SRTP against the same call without, in one run.

Three views, each with plain RTP as the reference measured alongside:

- the media loop thread alone: three full-duplex stream pairs on loopback run at the same time
  (plain, SRTP _80, SRTP _32), each loop thread's CPU read from /proc/self/task/TID/schedstat
  (nanoseconds on CPU) over the same window;
- the whole intercom process in a call to Asterisk's Echo() (extension 600): once with plain
  endpoints, once with ``media_encryption=sdes`` and ``media.srtp: required``;
- the price of one packet through the transform's Python face (protect + unprotect), against
  the identity transform (the same call path without a cipher).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from devtools.asterisk import Asterisk
from devtools.box.process import Intercom
from devtools.waiting import wait_for
from firmware import _rtpcore as core
from firmware.core._srtp import SrtpTransform
from firmware.core._transform import PacketTransform
from firmware.events import MediaParams, SrtpParams
from firmware.media.audio import NullSink, ToneSource
from firmware.media.stream import RtpPorts, RtpSession

from .cpu import _cpu_seconds

SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")


def _thread_cpu_ns(tid: int) -> int:
    return int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0])


def _loop_tids(session: RtpSession) -> int:
    thread = session._loop_thread  # noqa: SLF001 - the benchmark reads the loop thread's id
    assert thread is not None and thread.native_id is not None
    return thread.native_id


def loop_threads(seconds: float) -> list[dict]:
    """Per-loop-thread CPU per call-minute: plain and both suites side by side."""
    pairs = []
    for suite in (None, *SUITES):
        ka, kb = os.urandom(30), os.urandom(30)
        pa, pb = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
        a = RtpSession(pa, ToneSource(700), NullSink())
        b = RtpSession(pb, ToneSource(1300), NullSink())
        a.start(MediaParams("127.0.0.1", pb.port, 0, "PCMU", 101, 20, "sendrecv",
                            SrtpParams(suite, ka, kb) if suite else None))
        b.start(MediaParams("127.0.0.1", pa.port, 0, "PCMU", 101, 20, "sendrecv",
                            SrtpParams(suite, kb, ka) if suite else None))
        pairs.append((suite, a, b, pa, pb))
    try:
        time.sleep(1.0)
        start = {id(s): _thread_cpu_ns(_loop_tids(s)) for _, a, b, _, _ in pairs for s in (a, b)}
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        rows = []
        for suite, a, b, _, _ in pairs:
            used = [(_thread_cpu_ns(_loop_tids(s)) - start[id(s)]) / 1e9 for s in (a, b)]
            stats = b.stats()
            rows.append({"what": f"loop thread, {suite or 'plain RTP'}",
                         "cpu_s_per_min": statistics.mean(used) * 60 / elapsed,
                         "received": stats["received"], "dropped": stats["auth_failures"]})
    finally:
        for _, a, b, pa, pb in pairs:
            a.stop()
            b.stop()
            pa.close()
            pb.close()
    return rows


def _echo_call(encryption: str | None, seconds: float) -> dict:
    pbx = Asterisk(media_encryption=encryption, rtp_base=36000).start()
    tmp = Path(tempfile.mkdtemp(prefix="intercom-bench-srtp-"))
    try:
        box = Intercom(tmp / "box", pbx.port, audio={"capture": "tone:700", "playback": "null"},
                       media={"srtp": "required" if encryption else "off"})
        box.start()
        try:
            wait_for(lambda: box.status().get("state") == "idle", 15, 0.1, "registration")
            assert box.cmd("call", "600")["ok"]
            wait_for(lambda: box.status().get("state") == "in_call", 15, 0.1, "the call")
            time.sleep(1)
            assert box.proc is not None
            cpu0, t0 = _cpu_seconds(box.proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu = (_cpu_seconds(box.proc.pid) - cpu0) * 60 / (time.monotonic() - t0)
            st = box.status()
            box.cmd("hangup")
        finally:
            box.stop()
    finally:
        pbx.cleanup()
    return {"what": f"intercom process, Echo() call, "
                    f"{(st['media'] or {}).get('srtp') or 'plain RTP'}",
            "cpu_s_per_min": cpu, "received": st["rtp"]["received"],
            "dropped": st["rtp"]["auth_failures"]}


def echo_calls(seconds: float) -> list[dict]:
    """The intercom process in a call to Echo(): plain endpoints, then SDES endpoints."""
    return [_echo_call(None, seconds), _echo_call("sdes", seconds)]


def per_packet(n: int) -> list[dict]:
    """ns per RTP packet, protect then unprotect, through the Python face of the transform."""
    packets = [core.rtp_pack(0, False, i & 0xFFFF, i * 160, 1234, os.urandom(160))
               for i in range(n)]
    rows = []
    for suite in (None, *SUITES):
        if suite is None:
            tx = rx = PacketTransform()
        else:
            ka, kb = os.urandom(30), os.urandom(30)
            tx, rx = SrtpTransform(suite, ka, kb), SrtpTransform(suite, kb, ka)
        t0 = time.perf_counter_ns()
        for p in packets:
            rx.unprotect_rtp(tx.protect_rtp(p))
        rows.append({"what": f"one packet both ways, {suite or 'identity transform'}",
                     "ns": (time.perf_counter_ns() - t0) / n})
    return rows


def run(seconds: float, quick: bool = False) -> dict[str, list[dict]]:
    return {"loop": loop_threads(seconds), "echo": echo_calls(seconds),
            "packet": per_packet(20_000 if quick else 200_000)}


def table(results: dict[str, list[dict]]) -> str:
    out = ["| what | CPU s per call-minute | vs plain RTP | packets received | auth drops |",
           "|---|---:|---:|---:|---:|"]
    for key in ("loop", "echo"):
        rows = results[key]
        ref = rows[0]["cpu_s_per_min"]
        for r in rows:
            ratio = r["cpu_s_per_min"] / ref if ref else float("nan")
            out.append(f"| {r['what']} | {r['cpu_s_per_min']:.3f} | {ratio:.2f}x | "
                       f"{r['received']} | {r['dropped']} |")
    packet = results["packet"]
    ref = packet[0]["ns"]
    out += ["", "| transform (Python call per packet, protect + unprotect) | ns per packet "
                "| vs identity |", "|---|---:|---:|"]
    for r in packet:
        out.append(f"| {r['what']} | {r['ns']:.0f} | {r['ns'] / ref:.2f}x |")
    # a call moves 50 packets/s each way: 3000 protect+unprotect pairs per minute
    crypto = (packet[1]["ns"] - ref) * 3000 / 1e9
    out.append(f"\nThe cipher work alone (the _80 row minus identity, x 3000 packets each way "
               f"per minute): {crypto:.3f} s of CPU per call-minute.")
    return "\n".join(out)


if __name__ == "__main__":
    print(table(run(10.0, quick=True)))
