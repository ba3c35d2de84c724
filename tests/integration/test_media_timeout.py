"""A call whose peer vanished ends by itself: the running box (a real `intercom run`), SIPp as
the PBX that calls it and never hangs up, and the media core as the far end's RTP. While RTP
flows the call stays; when it stops, the box hangs up after media.timeout (a stranger's RTP
does not keep it alive); on hold (a=inactive) the longer media.hold_timeout applies."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from devtools.box.process import Intercom
from devtools.loopback import free_port
from devtools.waiting import wait_for
from firmware import _rtpcore as core
from firmware.events import MediaParams
from firmware.media.audio import NullSink, ToneSource
from firmware.media.stream import RtpPorts, RtpSession

from .test_sipp import Sipp
from .test_trust import STRANGER_IP

pytestmark = pytest.mark.integration
TIMEOUT, HOLD_TIMEOUT = 1.5, 6.0


class FarEnd:
    """The PBX side's RTP: a real media session sending a tone to the box's RTP port."""

    def __init__(self, box_rtp: int) -> None:
        self.ports = RtpPorts("127.0.0.1")
        self.session = RtpSession(self.ports, ToneSource(440), NullSink())
        self.session.start(MediaParams("127.0.0.1", box_rtp, 0, "PCMU", 101, 20, "sendrecv"))

    def stop(self) -> None:
        if self.session.running:
            self.session.stop()

    def close(self) -> None:
        self.stop()
        self.ports.close()


def _free_rtp_port() -> int:
    probe = RtpPorts("127.0.0.1")
    probe.close()
    return probe.port


def _start(tmp_path: Path, scenario: str) -> tuple[Sipp, Intercom, FarEnd, int]:
    box_port, box_rtp = free_port(), _free_rtp_port()
    far = FarEnd(box_rtp)  # sending before the call: packets wait in the box's socket
    sipp = Sipp(scenario, tmp_path, f"127.0.0.1:{box_port}")
    sipp.args[-1:-1] = ["-key", "rtp_port", str(far.ports.port)]
    box = Intercom(tmp_path / "box", sipp.port, register=False, keepalive="off",
                   local_port=box_port, log_level="info", calls={"auto_answer": True},
                   media={"rtp_port": box_rtp, "timeout": TIMEOUT,
                          "hold_timeout": HOLD_TIMEOUT})
    box.start()
    sipp.start()
    return sipp, box, far, box_rtp


def _stays_in_call(box: Intercom, seconds: float) -> dict:
    """The state over ``seconds`` (several looks): in_call at every one."""
    end, st = time.monotonic() + seconds, box.status()
    while time.monotonic() < end:
        st = box.status()
        assert st["state"] == "in_call", f"the call ended: {st['last_call_end']}"
        time.sleep(0.2)
    return st


def test_a_peer_that_stops_sending_is_hung_up_on(tmp_path: Path) -> None:
    sipp, box, far, box_rtp = _start(tmp_path, "media_silence.xml")
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind((STRANGER_IP, 0))
    try:
        box.wait_state("in_call")
        st = _stays_in_call(box, 3 * TIMEOUT)  # RTP flows: the bound never fires
        assert st["rtp"]["received"] > 0 and st["media"]["direction"] == "sendrecv"
        far.stop()
        seq = 0

        def idle_despite_a_stranger() -> dict | None:
            nonlocal seq
            for _ in range(10):  # a stranger's RTP is no sign of the peer's life
                seq += 1
                stranger.sendto(core.rtp_pack(0, False, seq, 160 * seq, 0xBAD, bytes(160)),
                                ("127.0.0.1", box_rtp))
            s = box.status()
            return s if s["state"] == "idle" else None

        st = wait_for(idle_despite_a_stranger, 20, 0.05, "the box hanging up")
        sipp.wait()  # SIPp got the box's BYE and answered it
    finally:
        stranger.close()
        far.close()
        box.stop()
    assert st["last_call_end"].startswith("media timeout: no RTP for ")
    assert "on hold" not in st["last_call_end"]
    assert st["rtp"]["wrong_source"] >= 10, "the stranger's packets were counted, not taken"
    assert f"(media.timeout is {TIMEOUT:g} s): hanging up" in box.log()


def test_on_hold_the_longer_bound_applies(tmp_path: Path) -> None:
    sipp, box, far, _ = _start(tmp_path, "media_hold.xml")
    try:
        box.wait_state("in_call")
        wait_for(lambda: (box.status()["media"] or {}).get("direction") == "inactive", 15, 0.1,
                 "the hold re-INVITE")
        far.stop()
        _stays_in_call(box, 2 * TIMEOUT + 1)  # well past media.timeout: held, so still up
        st = wait_for(lambda: (s := box.status())["state"] == "idle" and s, 3 * HOLD_TIMEOUT,
                      0.2, "the box hanging up after media.hold_timeout")
        sipp.wait()
    finally:
        far.close()
        box.stop()
    assert st["last_call_end"].startswith("media timeout: no RTP for ")
    assert st["last_call_end"].endswith(" on hold")
    assert f"(media.hold_timeout is {HOLD_TIMEOUT:g} s): hanging up" in box.log()
