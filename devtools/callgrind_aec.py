"""Where speexdsp's time goes in the box's echo canceller, per 20 ms frame: the adaptive filter
(``speex_echo_cancellation``, mdf.c) against the preprocessor (``speex_preprocess_run``: the
residual echo suppressor), in instructions (callgrind, exact) and wall time (best of N).

The signal is the AEC room test's (devtools/room.py: far-end speech from espeak-ng through a
soft-clipping speaker and a room impulse response, the visitor talking over it, the echo path
changing), driven through the product's ``_aec.SpeexCanceller`` frame by frame. Each part is
counted in its own callgrind run (``--toggle-collect`` on that function only, so the signal's
making is not counted) and its top functions listed by their own cost. The product's speexdsp is
the ``-O3`` static copy build.sh builds inside ``_aec`` (``INTERCOM_SPEEXDSP``; its functions are
named), or Debian's libspeexdsp when ``_aec`` was built without it. Debian's is stripped: its
internal functions (the FFT, the filterbank) have no names. A build of the same version with
``-g`` and Debian's flags, put first with ``LD_LIBRARY_PATH``, executes the same instruction count
(checked: 164,813,008 both for 500 frames of the filter) and names them.

Wall time uses ctypes on Debian's libspeexdsp (``libspeexdsp.so.1``: the product's own library
when ``_aec`` links it, not the private copy), set up as ``SpeexCanceller`` sets it up, timing
each call; its output is checked to be sample-identical to the product's before it counts (the
``-O3`` copy's output is Debian's, sample for sample, on x86:
tests/integration/test_aec_speexdsp.py).

    python -m devtools.callgrind_aec [--seconds 24] [--tail 128] [--repeats 5] [--wall-only]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from devtools import room, speex_twin
from firmware.core import _aec

PARTS = ("speex_echo_cancellation", "speex_preprocess_run")
_SUMMARY = re.compile(r"^summary: (\d+)", re.M)
_FUNCTION = re.compile(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*?)(?: \[(.*)\])?$")


def signals(seconds: float) -> tuple[room.Scenario, np.ndarray, np.ndarray, np.ndarray]:
    sc = room.Scenario(seconds=seconds) if seconds != room.Scenario.seconds else room.Scenario()
    played, near, mic = sc.signals()
    return sc, played, near, mic


def drive(seconds: float, tail_ms: int) -> dict:
    """The product's canceller on the room signal: what callgrind counts (a child process)."""
    sc, played, near, mic = signals(seconds)
    c = _aec.create("speex", tail_ms=tail_ms, frame_samples=room.FRAME)
    out = room.run(c, played, mic)
    result: dict = {"frames": len(out) // room.FRAME}
    if seconds >= room.Scenario.seconds:
        r = room.report(sc, near, mic, out)
        result.update(erle_db=r.erle_db, convergence_s=r.convergence_s,
                      erle_after_dt_db=r.erle_after_dt_db, erle_changed_db=r.erle_changed_db,
                      near_level_db=r.near.level_db, near_correlation=r.near.correlation)
    return result


def top_functions(cg_file: Path, limit: int = 12) -> list[tuple[int, str]]:
    """(own instructions, function) in ``cg_file``, most first, as callgrind_annotate names them."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", str(cg_file)],
                          capture_output=True, text=True, check=True, timeout=120).stdout
    rows = []
    for line in text.split("file:function", 1)[-1].splitlines():
        m = _FUNCTION.match(line)
        if m and m.group(2) != "PROGRAM TOTALS":
            where = m.group(3) or ""
            name = m.group(2).rsplit(":", 1)[-1]
            rows.append((int(m.group(1).replace(",", "")),
                         f"{name} ({Path(where).name})" if where else name))
    return rows[:limit]


def count(part: str, seconds: float, tail_ms: int, tmp: Path) -> dict:
    """Instructions of ``part`` (inclusive) over the room signal, and its top functions."""
    out = tmp / f"cg.{part}"
    cmd = ["valgrind", "--tool=callgrind", "-q", f"--toggle-collect={part}",
           f"--callgrind-out-file={out}", sys.executable, "-m", "devtools.callgrind_aec",
           "--drive", "--seconds", str(seconds), "--tail", str(tail_ms)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    m = _SUMMARY.search(out.read_text(errors="replace"))
    result["instructions"] = int(m.group(1)) if m else 0
    result["top"] = top_functions(out)
    return result


def products_speexdsp() -> str:
    """Which speexdsp ``_aec`` runs: the libspeexdsp it made the loader map, or its own copy
    (before a ``_Twin`` maps Debian's into this process)."""
    maps = Path("/proc/self/maps").read_text()
    mapped = sorted({ln.split()[-1] for ln in maps.splitlines() if "libspeexdsp" in ln})
    return ", ".join(mapped) if mapped else f"its own, inside {Path(_aec.__file__).name}"


class _Twin(speex_twin.SpeexTwin):
    """Debian's libspeexdsp set up as ``_aec.SpeexCanceller`` (devtools/speex_twin.py), each
    call timed."""

    def run(self, played: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Output and the mean ns per frame of each part (the reference is the frame played
        in the same tick: the room's delay line is zero)."""
        n = min(len(played), len(mic)) // room.FRAME
        p = np.frombuffer(room.to_pcm(played[:n * room.FRAME]), dtype="<i2").copy()
        m = np.frombuffer(room.to_pcm(mic[:n * room.FRAME]), dtype="<i2").copy()
        out = np.zeros(room.FRAME, dtype=np.int16)
        result = np.zeros(n * room.FRAME, dtype=np.int16)
        pout = out.ctypes.data_as(ctypes.c_void_p)
        cancel, pre = self.lib.speex_echo_cancellation, self.lib.speex_preprocess_run
        clock = time.perf_counter_ns
        t_echo = t_pre = 0
        for i in range(n):
            pm = m[i * room.FRAME:].ctypes.data_as(ctypes.c_void_p)
            pp = p[i * room.FRAME:].ctypes.data_as(ctypes.c_void_p)
            t0 = clock()
            cancel(self.echo, pm, pp, pout)
            t1 = clock()
            pre(self.pre, pout)
            t2 = clock()
            t_echo += t1 - t0
            t_pre += t2 - t1
            result[i * room.FRAME:(i + 1) * room.FRAME] = out
        return result.astype(np.float64), t_echo / n, t_pre / n


def wall(seconds: float, tail_ms: int, repeats: int) -> dict:
    """Best of ``repeats`` of the mean wall ns per frame of each part, after checking that the
    twin's output is the product's, sample for sample."""
    _, played, _, mic = signals(seconds)
    product = room.run(_aec.create("speex", tail_ms=tail_ms, frame_samples=room.FRAME),
                       played, mic)
    best = {part: float("inf") for part in PARTS}
    for _ in range(repeats):
        twin = _Twin(tail_ms)
        try:
            out, t_echo, t_pre = twin.run(played, mic)
        finally:
            twin.close()
        if not np.array_equal(out, product):
            raise SystemExit("the ctypes twin's output differs from _aec.SpeexCanceller's")
        best[PARTS[0]] = min(best[PARTS[0]], t_echo)
        best[PARTS[1]] = min(best[PARTS[1]], t_pre)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=room.Scenario.seconds,
                    help="of the room signal (24: the test's scenario, with its figures)")
    ap.add_argument("--tail", type=int, default=128, help="echo tail, ms")
    ap.add_argument("--repeats", type=int, default=5, help="wall-time runs (best is kept)")
    ap.add_argument("--wall-only", action="store_true", help="no callgrind runs")
    ap.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.drive:
        print(json.dumps(drive(args.seconds, args.tail)))
        return 0
    print(f"the product's speexdsp: {products_speexdsp()}; the twin's: libspeexdsp.so.1, "
          f"LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '')!r}; "
          f"tail {args.tail} ms, 20 ms blocks, {args.seconds:g} s of the room signal")
    times = wall(args.seconds, args.tail, args.repeats)
    if args.wall_only:
        print(" ".join(f"{part} {times[part] / 1000:.1f} µs" for part in PARTS))
        return 0
    with tempfile.TemporaryDirectory(prefix="callgrind-aec-") as tmp:
        counts = {part: count(part, args.seconds, args.tail, Path(tmp)) for part in PARTS}
    first = counts[PARTS[0]]
    frames = first["frames"]
    total = sum(c["instructions"] for c in counts.values())
    print(f"\n| part | instructions / 20 ms frame | share | wall µs / frame, the twin's "
          f"libspeexdsp (best of {args.repeats}) |\n|---|---:|---:|---:|")
    for part in PARTS:
        n = counts[part]["instructions"] / frames
        print(f"| {part} | {n:,.0f} | {100 * n * frames / total:.0f} % | "
              f"{times[part] / 1000:.1f} |")
    print(f"| both | {total / frames:,.0f} | 100 % | {sum(times.values()) / 1000:.1f} |")
    for part in PARTS:
        print(f"\n{part}, own instructions per frame by function:")
        for n, name in counts[part]["top"]:
            print(f"  {n / frames:>10,.0f}  {name}")
    if "erle_db" in first:
        print("\nroom figures: " + ", ".join(f"{k} {v:.2f}" for k, v in first.items()
                                             if k not in ("frames", "instructions", "top")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
