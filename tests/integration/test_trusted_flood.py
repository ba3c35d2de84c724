"""A trusted source gone bad cannot take the door out of service, over real sockets: the whole
box (in-process, pins simulated) registered with a real Asterisk on 127.0.0.1, flooded by two
processes (devtools/sip_flood.py) — an SBC listed in ``sip.trusted_sources`` (127.0.0.3) and a
forger using the PBX's own address (127.0.0.1, another port) — with the costliest requests
each may send. Meanwhile baresip at 5001 calls the box through Asterisk: the call is answered
and carries on, the stored bytes stay within the budget, the SBC gets 503 beyond its share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devtools.waiting import wait_for

from .alsa_env import write_mic_tone

pytestmark = pytest.mark.integration
SBC = "127.0.0.3"
REPO = Path(__file__).resolve().parents[2]
RATE = 400  # requests per second from each flooder (half of them stored if admitted)
SECONDS = 12.0


def flooder(src: str, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "devtools.sip_flood", src, str(port),
                             str(SECONDS), str(RATE)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)


def test_pbx_call_is_answered_during_a_trusted_flood(asterisk, box, baresip) -> None:
    write_mic_tone(700)
    phone = baresip("5001")
    b = box(sip={"trusted_sources": [SBC]}, calls={"auto_answer": True})
    wait_for(lambda: b.status()["registered"], 15, 0.1, "registration")
    port = b.app.cfg.sip.local_port
    procs = [flooder(SBC, port), flooder("127.0.0.1", port)]
    try:
        wait_for(lambda: b.status()["counters"].get("dropped_budget", 0) > 0, 10, 0.1,
                 "the SBC's share filled")
        phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
        phone.wait_event("CALL_ESTABLISHED", 15)
        b.wait_state("in_call", 10)
        sent = [int(p.communicate(timeout=SECONDS + 20)[0]) for p in procs]
        st = b.status()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    c = st["counters"]
    assert st["registered"], "the registration held through the flood"
    assert st["state"] == "in_call", "the call carried on through the flood"
    assert c["dropped_budget"] > 100 and c["transactions_evicted"] > 100, c
    assert c["rejected_too_large"] > 100, "oversize and over-many-fields requests refused"
    ua = b.app.ua
    limits = ua.config.budget
    assert ua.budget.peak <= limits.total + 16_384, "stored bytes stayed within the budget"
    assert ua.budget.held(SBC) <= limits.source_share
    assert sum(sent) > 2 * RATE * SECONDS * 0.8
    phone.command("hangup")
    b.wait_state("idle", 10)
