"""Speech through the whole stack under loss and jitter, judged by PESQ (ITU-T P.862 narrow
band) against the clean speech: a SIPp far end calls the box through Asterisk and sends
espeak-ng speech across the user-space impairment relay (devtools.impair; fixed seed).

The bounds were set from measurement with margin (docs/notes/quality.md has the table, baresip's
scores on the same run included); they hold the quality, not a timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.components import Asterisk
from devtools.speech import have_espeak
from devtools.speech_call import CONDITIONS, run_call

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not have_espeak(), reason="espeak-ng (Debian) renders speech")]

# condition index -> lowest PESQ accepted (measured here: 3.98, 3.31, 2.93). With the core's
# former repeat-and-fade concealment 3 % random scored 3.12 and fails; the bursty bound held with
# it too, so that one only guards against a gross regression.
BOUNDS = {0: 3.8, 2: 3.2, 3: 2.85}


@pytest.mark.parametrize("index", sorted(BOUNDS), ids=[CONDITIONS[i].name for i in sorted(BOUNDS)])
def test_box_speech_quality_under_loss(tmp_path: Path, asterisk: Asterisk, index: int) -> None:
    cond = CONDITIONS[index]
    r = run_call(asterisk, "intercom", cond, tmp_path, seed=1)
    # the relay did what the condition says (fixed seed: the same packets every run)
    assert r.sent > 500
    if cond.loss:
        assert 0.02 * r.sent <= r.dropped <= 0.07 * r.sent, r
    else:
        assert r.dropped == 0
    assert r.heard_s > r.sent * 0.020 * 0.95, "the box played less than was sent"
    assert r.pesq >= BOUNDS[index], f"{cond.name}: PESQ {r.pesq:.2f} < {BOUNDS[index]}"
