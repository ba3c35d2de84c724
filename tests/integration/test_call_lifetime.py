"""Every call ends (issue #23), on real sockets: SIPp from the trusted address (the box's
'server') against the running intercom. A CSeq far ahead cannot keep a call up, the box
refreshes a session timer and hangs up when the refresh fails, calls.max_duration hangs up.
The timing rules themselves are in tests/unit/test_call_lifetime.py (virtual clock)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.box.process import Intercom
from devtools.loopback import free_port

from .test_sipp import Sipp

pytestmark = pytest.mark.integration


def sipp(scenario: str, tmp: Path, box_port: int, *, timeout_s: int = 40,
         rtp_echo: bool = False, port: int | None = None) -> Sipp:
    """SIPp calling the box at ``box_port`` (from ``port``, if given); with ``rtp_echo`` it
    sends the box's RTP back from the SDP's address, so the box's media timeout sees a live
    peer."""
    tmp.mkdir(parents=True, exist_ok=True)
    peer = Sipp(scenario, tmp, f"127.0.0.1:{box_port}")
    peer.args[peer.args.index("40s")] = f"{timeout_s}s"
    if port is not None:
        peer.port = port
        peer.args[peer.args.index("-p") + 1] = str(port)
    if rtp_echo:
        peer.args += ["-rtp_echo", "-mp", str(free_port()), "-mi", "127.0.0.1"]
    return peer


@pytest.fixture
def box_for(tmp_path: Path) -> Iterator[Callable[..., Intercom]]:
    """An intercom that does not register and whose 'server' (trusted, where its BYE and
    re-INVITEs go) is the SIPp peer."""
    boxes: list[Intercom] = []

    def make(peer: Sipp, box_port: int, **settings: object) -> Intercom:
        box = Intercom(tmp_path / f"box{len(boxes)}", peer.port, register=False,
                       keepalive="off", local_port=box_port, **settings)
        boxes.append(box)
        return box.start()

    yield make
    for box in boxes:
        box.stop()


def test_cseq_far_ahead_then_bye_ends_the_call_and_the_box_takes_the_next(
        tmp_path: Path, box_for: Callable[..., Intercom]) -> None:
    box_port = free_port()
    first = sipp("cseq_ahead_bye.xml", tmp_path / "first", box_port)
    box = box_for(first, box_port)
    first.start()
    box.wait_state("ringing")
    assert box.cmd("answer")["ok"]
    first.wait()  # SIPp got 200 to its OPTIONS (CSeq 2000000000) and to its BYE (CSeq 2)
    st = box.wait_state("idle")
    assert st["last_call_end"] == "remote hangup"
    assert st["counters"]["cseq_jumps"] == 1 and st["counters"]["bye_cseq_lower"] == 1
    second = sipp("cseq_ahead_bye.xml", tmp_path / "second", box_port, port=first.port)
    second.start()
    box.wait_state("ringing")  # not 486: the first call is over
    assert box.cmd("answer")["ok"]
    second.wait()
    assert box.wait_state("idle")["counters"].get("busy_rejections", 0) == 0


@pytest.mark.slow  # ./build.sh slow: RFC 4028's 90 s floor puts the refresh 45 s into the call
def test_box_refreshes_the_session_and_a_failed_refresh_ends_it(
        tmp_path: Path, box_for: Callable[..., Intercom]) -> None:
    """The only long test here: the refresh comes at half of the RFC's smallest interval (the
    timing itself is tests/unit/test_call_lifetime.py's, on a virtual clock)."""
    box_port = free_port()
    peer = sipp("session_refresh.xml", tmp_path, box_port, timeout_s=120, rtp_echo=True)
    box = box_for(peer, box_port)
    peer.start()
    box.wait_state("ringing")
    assert box.cmd("answer")["ok"]
    box.wait_state("in_call")
    peer.wait(timeout=120)  # SIPp saw the refresh re-INVITE, answered 481, got the BYE
    st = box.wait_state("idle")
    assert st["last_call_end"] == "session refresh failed (481 Call/Transaction Does Not Exist)"
    assert st["counters"]["session_refreshes"] == 1
    log = peer.messages()
    origins = re.findall(r"^o=.*$", log, re.M)
    box_origins = [o for o in origins if not o.startswith("o=sipp")]
    assert len(box_origins) == 2 and box_origins[0] == box_origins[1], \
        "the refresh offers the SDP the 200 answered, same o= version"


def test_max_duration_hangs_up_by_itself(tmp_path: Path,
                                         box_for: Callable[..., Intercom]) -> None:
    box_port = free_port()
    peer = sipp("call_until_bye.xml", tmp_path, box_port, rtp_echo=True)
    box = box_for(peer, box_port, calls={"max_duration": 2})
    peer.start()
    box.wait_state("ringing")
    assert box.cmd("answer")["ok"]
    box.wait_state("in_call")
    peer.wait()  # SIPp never hangs up: the BYE it waits for is the box's
    st = box.wait_state("idle")
    assert st["last_call_end"] == "local hangup"
    assert st["rtp"]["received"] > 0, "SIPp echoed the box's RTP (a live peer, not a timeout)"
    assert "maximum call duration reached" in box.log()
