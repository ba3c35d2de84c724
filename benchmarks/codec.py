"""G.711 codec speed: the Cython core against CPython's audioop (or, where audioop is gone,
the pure-Python reference), per 160-sample frame and in bulk, on non-repeating input."""

from __future__ import annotations

import os
import statistics
import timeit
import warnings
from collections.abc import Callable

from firmware import _rtpcore as core
from firmware.media import _reference as ref

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop  # type: ignore[import-not-found]
    except ImportError:  # Python >= 3.13
        audioop = None


def _per_call_ns(fn: Callable[[bytes], bytes], inputs: list[bytes], repeat: int = 7) -> float:
    """Median over ``repeat`` runs of the mean time per call, cycling through distinct inputs."""
    n = len(inputs)
    runs = []
    for _ in range(repeat):
        t = timeit.timeit(lambda: [fn(x) for x in inputs], number=1)
        runs.append(t / n * 1e9)
    return statistics.median(runs)


def run(quick: bool = False) -> list[dict]:
    frames = 2000 if quick else 20000
    pcm_frames = [os.urandom(320) for _ in range(frames)]
    law_frames = [os.urandom(160) for _ in range(frames)]
    bulk_pcm = os.urandom(2 * 8000 * (10 if quick else 60))  # seconds of 8 kHz audio
    bulk_law = os.urandom(len(bulk_pcm) // 2)
    if audioop is not None:
        reference = "audioop"
        refs = {"encode_ulaw": lambda x: audioop.lin2ulaw(x, 2),
                "encode_alaw": lambda x: audioop.lin2alaw(x, 2),
                "decode_ulaw": lambda x: audioop.ulaw2lin(x, 2),
                "decode_alaw": lambda x: audioop.alaw2lin(x, 2)}
    else:
        reference = "pure Python"
        refs = {name: getattr(ref, name) for name in
                ("encode_ulaw", "encode_alaw", "decode_ulaw", "decode_alaw")}
    rows = []
    for name, ref_fn in refs.items():
        ours = getattr(core, name)
        frame_inputs = pcm_frames if name.startswith("encode") else law_frames
        if reference == "pure Python":
            frame_inputs = frame_inputs[:200]
        # interleave ours and the reference so that machine noise hits both alike
        ours_runs, ref_runs, ours_bulk_runs, ref_bulk_runs = [], [], [], []
        bulk = bulk_pcm if name.startswith("encode") else bulk_law
        samples = len(bulk_pcm) // 2
        for _ in range(5):
            ours_runs.append(_per_call_ns(ours, frame_inputs, 1))
            ref_runs.append(_per_call_ns(ref_fn, frame_inputs, 1))
            ours_bulk_runs.append(timeit.timeit(lambda b=bulk, f=ours: f(b), number=1))
            if reference == "audioop" or not ref_bulk_runs:
                ref_bulk_runs.append(timeit.timeit(lambda b=bulk, f=ref_fn: f(b), number=1))
        ours_ns, ref_ns = statistics.median(ours_runs), statistics.median(ref_runs)
        ours_bulk, ref_bulk = min(ours_bulk_runs), min(ref_bulk_runs)
        rows.append({"function": name, "reference": reference,
                     "frame_ns": ours_ns, "ref_frame_ns": ref_ns, "frame_ratio": ref_ns / ours_ns,
                     "bulk_msps": samples / ours_bulk / 1e6,
                     "ref_bulk_msps": samples / ref_bulk / 1e6, "bulk_ratio": ref_bulk / ours_bulk})
    return rows


def table(rows: list[dict]) -> str:
    out = ["| function | ns/frame (ours) | ns/frame (" + rows[0]["reference"] + ") | ratio "
           "| Msamples/s bulk (ours) | (reference) | ratio |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['function']} | {r['frame_ns']:.0f} | {r['ref_frame_ns']:.0f} | "
                   f"{r['frame_ratio']:.1f}x | {r['bulk_msps']:.0f} | {r['ref_bulk_msps']:.0f} | "
                   f"{r['bulk_ratio']:.1f}x |")
    return "\n".join(out)
