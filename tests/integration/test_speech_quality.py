"""Speech through the whole stack under loss and jitter, judged by PESQ (ITU-T P.862 narrow
band) against the clean speech: a SIPp far end calls the box through Asterisk and sends
espeak-ng speech across the user-space impairment relay (devtools.impair; fixed seed).

The bounds were set from measurement with margin (docs/notes/quality.md has the table, baresip's
scores on the same run included); they hold the quality, not a timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.asterisk import Asterisk
from devtools.speech import have_espeak
from devtools.speech_call import CONDITIONS, run_call

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not have_espeak(), reason="espeak-ng (Debian) renders speech")]

# condition index -> lowest PESQ accepted (measured here: 3.98, 3.98, 3.60, 3.16 in three runs;
# baresip 3.98, 3.98, 3.37, 2.25 on the same runs). Without bridging a gap towards the frame
# after it (the concealer extrapolating alone) the box scored 3.31 and 2.93, and with the older
# repeat-and-fade 3.12 at 3 % random: both fail these bounds. A jitter buffer that sheds its
# unused delay mid-word instead of at a pause scored 3.84 clean and 3.21 jitter-only: fails.
BOUNDS = {0: 3.9, 1: 3.9, 2: 3.45, 3: 3.0}


@pytest.mark.parametrize("index", sorted(BOUNDS), ids=[CONDITIONS[i].name for i in sorted(BOUNDS)])
def test_box_speech_quality_under_loss(tmp_path: Path, asterisk: Asterisk, index: int) -> None:
    cond = CONDITIONS[index]
    r = run_call(asterisk, "intercom", cond, tmp_path / "first", seed=1)
    scores = [r.pesq]
    if r.pesq < BOUNDS[index]:
        # the best of two calls (same seed, same packets): a moment of load on this shared
        # 2-core host costs one call (seen: clean 3.84 at load 3); a regression costs both
        again = run_call(asterisk, "intercom", cond, tmp_path / "second", seed=1)
        scores.append(again.pesq)
        r = max(r, again, key=lambda x: x.pesq)
    # the relay did what the condition says (fixed seed: the same packets every run)
    assert r.sent > 500
    if cond.loss:
        assert 0.02 * r.sent <= r.dropped <= 0.07 * r.sent, r
    else:
        assert r.dropped == 0
    assert r.heard_s > r.sent * 0.020 * 0.95, "the box played less than was sent"
    assert r.pesq >= BOUNDS[index], \
        f"{cond.name}: PESQ {' and '.join(f'{s:.2f}' for s in scores)} < {BOUNDS[index]}"
