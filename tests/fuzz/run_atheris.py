"""Coverage-guided fuzzing with atheris (libFuzzer) on the same targets as the hypothesis run.

    python -m tests.fuzz.run_atheris TARGET [libFuzzer options, e.g. -runs=200000 -max_len=4096]
    python -m tests.fuzz.run_atheris --list

The seeds of tests/fuzz/corpus.py are written to a fresh corpus folder first (or use
``-corpus DIR``). A crash leaves libFuzzer's ``crash-*`` file: replay it with
``python -m tests.fuzz.run_atheris TARGET crash-FILE``. Needs ``pip install atheris``
(``./build.sh fuzz`` installs it).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main(argv: list[str]) -> int:
    import atheris

    with atheris.instrument_imports():
        from . import corpus, targets, trusted

    def trusted_seeds() -> list[bytes]:  # answered (first byte even) and ringing (odd)
        return [bytes([r]) + trusted.encode(s) for s in trusted.seed_sequences() for r in (0, 1)]

    if len(argv) < 2 or argv[1] not in targets.TARGETS:
        print("targets:", ", ".join(targets.TARGETS), file=sys.stderr)
        return 2
    name = argv[1]
    target = targets.TARGETS[name]
    seeds = {"sdp": corpus.sdp_seeds, "sip_uri": corpus.uri_seeds, "rtp": corpus.rtp_seeds,
             "jitter": corpus.rtp_seeds, "trusted_call": trusted_seeds}.get(
                 name, corpus.sip_seeds)()
    rest = argv[2:]
    if not any(not a.startswith("-") for a in rest):  # no corpus dir or crash file given
        folder = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
        for i, seed in enumerate(seeds):
            (folder / f"seed{i:03d}").write_bytes(seed)
        rest.append(str(folder))
    atheris.Setup([argv[0], *rest], target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
