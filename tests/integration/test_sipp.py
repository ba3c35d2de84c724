"""Edge cases real phones rarely produce, scripted with SIPp against the running intercom."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from devtools.box.process import Intercom
from devtools.loopback import free_port
from devtools.paths import REPO
from devtools.waiting import wait_for

pytestmark = pytest.mark.integration
SCENARIOS = Path(__file__).parent / "sipp"


class Sipp:
    def __init__(self, scenario: str, tmp: Path, target: str | None = None) -> None:
        self.port = free_port()
        self.tmp = tmp
        args = ["sipp", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p",
                str(self.port), "-m", "1", "-timeout", "40s", "-timeout_error", "-nostdin",
                "-trace_err", "-trace_msg", "-max_recv_loops", "1000"]
        if target:
            args.append(target)
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self) -> Sipp:
        self.proc = subprocess.Popen(self.args, cwd=self.tmp, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.3)
        return self

    def wait(self, timeout: float = 45) -> None:
        assert self.proc is not None
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        logs = "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in self.tmp.glob("*_errors.log"))
        assert self.proc.returncode == 0, f"SIPp failed ({self.proc.returncode}): " \
                                          f"{err.decode()[-2000:]}\n{logs}"

    def messages(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.tmp.glob("*_messages.log"))


@pytest.fixture
def peer_box(tmp_path: Path):
    """An intercom that does not register and whose 'server' is the SIPp peer."""
    boxes: list[Intercom] = []

    def make(server_port: int = 5060, local_port: int | None = None) -> Intercom:
        box = Intercom(tmp_path / "box", server_port, register=False, keepalive="off",
                       local_port=local_port)
        boxes.append(box)
        return box.start()

    yield make
    for box in boxes:
        box.stop()


def test_invite_challenged_401_then_407(tmp_path: Path, peer_box) -> None:
    sipp = Sipp("auth_401_407.xml", tmp_path).start()
    box = peer_box(sipp.port)
    assert box.cmd("call", "5001")["ok"]
    box.wait_state("in_call")
    assert box.cmd("hangup")["ok"]
    sipp.wait()
    log = sipp.messages()
    assert 'algorithm=SHA-256' in log and 'qop=auth' in log and "nc=00000001" in log


def test_reinvite_with_new_media_address(tmp_path: Path, peer_box) -> None:
    box_port = free_port()
    sipp = Sipp("reinvite_media.xml", tmp_path, f"127.0.0.1:{box_port}")
    box = peer_box(local_port=box_port)
    sipp.start()
    box.wait_state("ringing")
    assert box.cmd("answer")["ok"]
    st = box.wait_state("in_call")
    assert st["media"]["remote_port"] == 6000
    moved = wait_for(lambda: (m := box.status()["media"]) and m["remote_port"] == 7777
                     and m, 10, 0.1, "media moved by re-INVITE")
    assert moved["remote_addr"] == "127.0.0.5" and moved["direction"] == "sendrecv"
    sipp.wait()
    assert box.wait_state("idle")["last_call_end"] == "remote hangup"


def test_cancel_racing_200_is_acked_and_byed(tmp_path: Path, peer_box) -> None:
    sipp = Sipp("cancel_race.xml", tmp_path).start()
    box = peer_box(sipp.port)
    assert box.cmd("call", "5001")["ok"]
    wait_for(lambda: "SIP/2.0 180 Ringing" in box.log(), 10, 0.05, "180 at the box")
    assert box.cmd("hangup")["ok"]
    sipp.wait()
    st = box.wait_state("idle")
    assert st["last_call_end"] == "cancelled"
    log = box.log()
    assert log.index("CANCEL sip:5001") < log.index("\nACK sip:sipp") < log.index("\nBYE sip:sipp")


def test_retransmitted_invite_rings_once(tmp_path: Path, peer_box) -> None:
    box_port = free_port()
    box = peer_box(local_port=box_port)
    sipp = Sipp("retransmitted_invite.xml", tmp_path, f"127.0.0.1:{box_port}").start()
    sipp.wait()
    st = box.wait_state("idle")
    assert st["last_call_end"] == "cancelled by caller"
    assert st["counters"]["retransmissions_received"] >= 1
    assert box.log().count("incoming call from") == 1


def test_malformed_requests_get_errors_and_the_box_survives(tmp_path: Path, peer_box) -> None:
    box_port = free_port()
    box = peer_box(local_port=box_port)
    sipp = Sipp("malformed.xml", tmp_path, f"127.0.0.1:{box_port}").start()
    sipp.wait()
    st = box.status()
    assert st["state"] == "idle" and box.proc.poll() is None
    counters = st["counters"]
    assert counters["dropped_malformed"] >= 2
    assert counters.get("rejected_malformed", 0) + counters.get("rejected_invalid", 0) >= 5


def test_many_garbage_datagrams_do_not_stop_the_box(tmp_path: Path, peer_box) -> None:
    """A burst of random bytes and truncated messages: each dropped or answered, none fatal."""
    import random
    import socket

    box_port = free_port()
    box = peer_box(local_port=box_port)
    rnd = random.Random(4475)
    seed = REPO / "tests" / "data" / "rfc4475"
    samples = [p.read_bytes() for p in sorted(seed.glob("*.dat"))]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(600):
            base = samples[i % len(samples)]
            data = bytearray(base[: rnd.randrange(1, len(base) + 1)])
            for _ in range(rnd.randrange(0, 4)):
                if data:
                    data[rnd.randrange(len(data))] = rnd.randrange(256)
            s.sendto(bytes(data), ("127.0.0.1", box_port))
    time.sleep(1.0)
    st = box.status()
    assert box.proc.poll() is None and st["ok"]
    assert st["counters"]["dropped_malformed"] > 0


