"""Sound-card clock drift: an hour of call (simulated, virtual clock) with the card +-200 ppm off
the loop, with the drift control and without it (the reference), and what the control costs
per 20 ms tick against passing frames through."""

from __future__ import annotations

import statistics
import timeit

import numpy as np

from devtools.drift_sim import AMP, FS, HZ, RATE, glitches, simulate
from firmware.core._drift import DriftCompensator


def _tick_ns(on: bool, ticks: int = 20000) -> float:
    comp = DriftCompensator(FS, on, on)
    frame = (AMP * np.sin(2 * np.pi * HZ * np.arange(FS) / RATE)).astype("<i2").tobytes()
    raw = frame + frame[:40]

    def tick() -> None:
        comp.capture(raw[:2 * comp.capture_need(400, 5_000_000)])
        comp.playback(frame, 200, 5_000_000)

    runs = [timeit.timeit(tick, number=ticks) / ticks * 1e9 for _ in range(5)]
    return statistics.median(runs)


def run(seconds: float) -> list[dict]:
    rows = []
    for ppm in (200.0, -200.0, 0.0):
        for on in (True, False):
            r = simulate(ppm, seconds, on)
            st = r["comp"].stats()
            step, spread = glitches(r["played"])
            rows.append({"ppm": ppm, "control": "on" if on else "off (reference)",
                         "estimate": st["drift_ppm"] if on else None,
                         "play_max_ms": r["play_max"] / 8, "cap_max_ms": r["cap_max"] / 8,
                         "step": step, "spread": spread,
                         "dropped": r["play_overruns"] + r["cap_overruns"] + r["underruns"]
                         + r["card_short"]})
    on_ns, off_ns = _tick_ns(True), _tick_ns(False)
    rows.append({"cost_on_ns": on_ns, "cost_off_ns": off_ns})
    return rows


def table(rows: list[dict]) -> str:
    out = ["| card vs loop | drift control | drift_ppm measured | playback FIFO max ms | "
           "capture FIFO max ms | largest step vs clean tone | out-of-band dB (worst 1 s) | "
           "samples lost/short |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows[:-1]:
        est = "—" if r["estimate"] is None else f"{r['estimate']:+.1f}"
        out.append(f"| {r['ppm']:+.0f} ppm | {r['control']} | {est} | {r['play_max_ms']:.1f} | "
                   f"{r['cap_max_ms']:.1f} | {r['step']:.3f}x | {r['spread']:.1f} | "
                   f"{r['dropped']} |")
    c = rows[-1]
    out.append("")
    on_us, off_us = c["cost_on_ns"] / 1000, c["cost_off_ns"] / 1000
    out.append(f"Cost per 20 ms tick, both directions (Python face, so call overhead included): "
               f"{on_us:.1f} µs with the control, {off_us:.1f} µs passing frames through "
               f"({on_us / off_us:.2f}x; {(on_us - off_us) / 200:.3f} % of a tick).")
    return "\n".join(out)
