"""Echo cancellers (firmware.core._aec): quality in the simulated room and CPU per call-minute.

Quality: each canceller (and none, the reference) on the same signals of devtools.room at a
fixed seed: ERLE once converged, convergence time, the visitor's voice during double talk
(level and correlation against the near-end-only signal), re-convergence and ERLE after the
echo path changes. Two rooms: the default one (40 ms, -10 dB) and a hard one (80 ms, -6 dB,
louder noise). Where an image has been built, its own arm64 cancellers too (trixie's WebRTC 1.x,
AEC3, and speexdsp: devtools/aec_image_check.py, under qemu-user on the same signals).

CPU: (1) the canceller alone, ns per 20 ms frame (playback + capture hook, the identity
processor's cost through the same Python face subtracted), and (2) a full-duplex call between
two media streams on loopback, process CPU per 20 ms frame per stream, with and without the
canceller, windows interleaved so machine noise hits all alike. A call-minute is 3000 frames.
"""

from __future__ import annotations

import statistics
import time

from devtools import aec_image_check, room
from firmware.core import _aec
from firmware.core._processor import CaptureProcessor
from firmware.events import MediaParams
from firmware.media.audio import ToneSource
from firmware.media.stream import RtpPorts, RtpSession, StreamSettings

KINDS = ("speex", "webrtc")
ROOMS = {
    "default": room.Scenario(),
    "hard": room.Scenario(room=room.Room(delay_ms=80.0, coupling_db=-6.0, noise_dbfs=-50.0),
                          changed=room.Room(delay_ms=65.0, coupling_db=-8.0, noise_dbfs=-50.0,
                                            seed=7)),
}


def quality() -> list[dict]:
    rows = []
    root = aec_image_check.image_root()
    for room_name, sc in ROOMS.items():
        for kind in ("off",) + KINDS:
            for ns in ((False,) if kind == "off" else (False, True)):
                r = room.measure(_aec.create(kind, noise_suppression=ns), sc)
                rows.append({"room": room_name, "kind": kind, "ns": ns, "r": r})
        if root is not None:  # the image's own arm64 build (trixie: AEC3), under qemu-user
            reports = aec_image_check.measure(root, KINDS, sc)
            for kind in KINDS:
                version = f" {reports['webrtc_version']}" if kind == "webrtc" else ""
                rows.append({"room": room_name, "kind": f"image: {kind}{version}", "ns": False,
                             "r": reports[kind][0]})
    return rows


def _hook_ns(proc: CaptureProcessor, played: list[bytes], mic: list[bytes]) -> float:
    t = time.perf_counter_ns()
    for p, m in zip(played, mic, strict=True):
        proc.playback(p)
        proc.capture(m)
    return (time.perf_counter_ns() - t) / len(played)


def hook_cost(frames: int) -> dict[str, float]:
    """ns per 20 ms frame of each canceller, the identity processor's Python face taken out."""
    played, _, mic = room.Scenario(seconds=frames / 50).signals()
    pp, pm = room.to_pcm(played), room.to_pcm(mic)
    fp = [pp[i:i + 320] for i in range(0, len(pp), 320)]
    fm = [pm[i:i + 320] for i in range(0, len(pm), 320)]
    runs: dict[str, list[float]] = {"identity": [], **{k: [] for k in KINDS}}
    for _ in range(3):
        runs["identity"].append(_hook_ns(CaptureProcessor(), fp, fm))
        for k in KINDS:
            runs[k].append(_hook_ns(_aec.create(k), fp, fm))
    base = min(runs["identity"])
    return {k: max(min(v) - base, 0.0) for k, v in runs.items() if k != "identity"}


def _call_cpu(kind: str, seconds: float) -> float:
    """Process CPU ns per 20 ms frame per stream of a two-stream call on loopback."""
    settings = StreamSettings(echo_canceller=kind)
    pa, pb = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")

    class Drop:
        def write(self, pcm: bytes) -> None:
            pass

        def close(self) -> None:
            pass

    a = RtpSession(pa, ToneSource(700), Drop(), settings)
    b = RtpSession(pb, ToneSource(1300), Drop(), settings)
    try:
        a.start(MediaParams("127.0.0.1", pb.port, 0, "PCMU", 101, 20, "sendrecv"))
        b.start(MediaParams("127.0.0.1", pa.port, 0, "PCMU", 101, 20, "sendrecv"))
        time.sleep(0.5)
        c0, w0 = time.process_time_ns(), time.monotonic()
        time.sleep(seconds)
        cpu, wall = time.process_time_ns() - c0, time.monotonic() - w0
    finally:
        a.stop()
        b.stop()
        pa.close()
        pb.close()
    return cpu / (2 * wall * 50)


def call_cost(seconds: float, rounds: int = 3) -> dict[str, float]:
    runs: dict[str, list[float]] = {k: [] for k in ("off",) + KINDS}
    for _ in range(rounds):
        for k in runs:
            runs[k].append(_call_cpu(k, seconds / rounds))
    return {k: statistics.median(v) for k, v in runs.items()}


def run(seconds: float, quick: bool = False) -> dict:
    return {"quality": quality(), "hook": hook_cost(500 if quick else 3000),
            "call": call_cost(seconds), "webrtc_version": _aec.webrtc_version()}


def table(res: dict) -> str:
    out = ["| room | canceller | noise supp. | ERLE dB | to 15 dB s | visitor level dB "
           "(double talk) | visitor corr. | ERLE after DT dB | re-converge s | ERLE new path dB |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in res["quality"]:
        r = row["r"]
        name = row["kind"] + (f" {res['webrtc_version']}" if row["kind"] == "webrtc" else "")
        out.append(f"| {row['room']} | {name} | {'on' if row['ns'] else 'off'} | "
                   f"{r.erle_db:.1f} | {r.convergence_s:.1f} | {r.near.level_db:.1f} | "
                   f"{r.near.correlation:.2f} | {r.erle_after_dt_db:.1f} | "
                   f"{r.reconverge_s:.1f} | {r.erle_changed_db:.1f} |")
    out += ["", "| canceller | hook ns / 20 ms frame | call CPU ns / frame / stream | "
            "ratio to no AEC | CPU ms per call-minute |", "|---|---:|---:|---:|---:|"]
    off = res["call"]["off"]
    out.append(f"| off (reference) | 0 | {off:.0f} | 1.00x | {off * 3000 / 1e6:.1f} |")
    for k in KINDS:
        c = res["call"][k]
        out.append(f"| {k} | {res['hook'][k]:.0f} | {c:.0f} | {c / off:.2f}x | "
                   f"{c * 3000 / 1e6:.1f} |")
    return "\n".join(out)


if __name__ == "__main__":  # python -m benchmarks.aec
    print(table(run(10.0, quick=True)))
