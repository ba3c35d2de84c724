"""Speech quality under loss: PESQ (P.862 narrow band) of espeak-ng speech sent by a SIPp far
end through the impairment relay and Asterisk, played by the intercom and, on the same run with
the same seed and so the same lost packets, by baresip (without and with its plc module)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from devtools.asterisk import Asterisk
from devtools.speech import speech
from devtools.speech_call import CONDITIONS, SpeechResult, run_call

EXTRA_SEEDS = (2, 3, 4)
CLIENTS = (("intercom", "intercom (this firmware)", ()),
           ("baresip", "baresip 1.0.0 (reference)", ()),
           ("baresip", "baresip 1.0.0 + plc module", ("plc.so",)))


def run(seed: int = 1) -> list[tuple[str, list[SpeechResult]]]:
    clean = speech()
    pbx = Asterisk().start()
    tmp = Path(tempfile.mkdtemp(prefix="intercom-bench-speech-"))
    out: list[tuple[str, list[SpeechResult]]] = []
    try:
        for kind, label, modules in CLIENTS:
            results = []
            for i, cond in enumerate(CONDITIONS):
                results.append(run_call(pbx, kind, cond, tmp / f"{kind}-{len(out)}-{i}",
                                        seed=seed, clean=clean, baresip_modules=modules))
            out.append((label, results))
        # seed 1 is one loss pattern: three more at 3 % random, the box and baresip
        for seed in EXTRA_SEEDS:
            for kind in ("intercom", "baresip"):
                r = run_call(pbx, kind, CONDITIONS[2], tmp / f"{kind}-seed{seed}", seed=seed,
                             clean=clean)
                out.append((f"{kind} seed {seed}", [r]))
    finally:
        pbx.cleanup()
    return out


def table(rows: list[tuple[str, list[SpeechResult]]]) -> str:
    seeds = [(label, r[0]) for label, r in rows if " seed " in label]
    rows = [(label, r) for label, r in rows if " seed " not in label]
    ref = dict(rows)["baresip 1.0.0 (reference)"]
    head = "| condition | packets lost | " + " | ".join(label for label, _ in rows) + \
        " | intercom - baresip |"
    out = [head, "|---|---:|" + "---:|" * len(rows) + "---:|"]
    for i, cond in enumerate(CONDITIONS):
        ours = rows[0][1][i]
        cells = " | ".join(f"{r[i].pesq:.2f}" for _, r in rows)
        out.append(f"| {cond.name} | {ours.dropped}/{ours.sent} | {cells} | "
                   f"{ours.pesq - ref[i].pesq:+.2f} |")
    out.append("\nPESQ MOS-LQO (P.862 narrow band, `pesq` package) of 10 s of espeak-ng speech; "
               "jitter: 40 +- 20 ms uniform per packet (reorders); bursty: Gilbert-Elliott, mean "
               "burst 3 packets; seed 1 (the same packets lost for every client).")
    if seeds:
        out.append(f"\n{CONDITIONS[2].name}, other seeds (other lost packets):\n")
        out.append("| seed | packets lost | intercom | baresip | intercom - baresip |")
        out.append("|---:|---:|---:|---:|---:|")
        by = dict(seeds)
        for seed in EXTRA_SEEDS:
            a, b = by[f"intercom seed {seed}"], by[f"baresip seed {seed}"]
            out.append(f"| {seed} | {a.dropped}/{a.sent} | {a.pesq:.2f} | {b.pesq:.2f} | "
                       f"{a.pesq - b.pesq:+.2f} |")
    return "\n".join(out)
