"""Fixtures that start the real peers (Asterisk 22, baresip) and the intercom itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.components import PASSWORDS, REPO, Asterisk, Baresip, free_port, wait_for


class Intercom:
    """``python -m firmware run`` as a real process, driven through its control socket."""

    def __init__(self, tmp: Path, server_port: int, **sip: Any) -> None:
        self.dir = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.sock = tmp / "control.sock"
        self.log_path = tmp / "intercom.log"
        self.config = tmp / "intercom.yaml"
        self.sip_port = sip.pop("local_port", None) or free_port()
        calls = sip.pop("calls", {})
        audio = sip.pop("audio", {})
        settings = {"server": "127.0.0.1", "port": server_port, "username": "5002",
                    "password": PASSWORDS["5002"], "display_name": "Door",
                    "local_port": self.sip_port, "register_expires": 60,
                    "retry_min": 1, "retry_max": 4, **sip}
        doc = {"sip": settings, "calls": calls, "control": {"socket": str(self.sock)},
               "media": {"rtp_port": 0}, "audio": audio, "log": {"level": "debug"}}
        self.config.write_text(json.dumps(doc))  # JSON is YAML
        self.proc: subprocess.Popen | None = None

    def start(self) -> Intercom:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware", "run", "--config", str(self.config)],
            cwd=REPO, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(lambda: self.sock.exists() or self.proc.poll() is not None, 10, 0.05,
                 "the control socket")
        assert self.proc.poll() is None, self.log()
        return self

    def cmd(self, *args: str) -> dict:
        r = subprocess.run([sys.executable, "-m", "firmware", "--socket", str(self.sock), *args],
                           capture_output=True, text=True, cwd=REPO, timeout=20)
        out = r.stdout.strip()
        return json.loads(out) if out.startswith("{") else {"ok": False, "error": r.stderr}

    def status(self) -> dict:
        return self.cmd("status", "--json")

    def wait_state(self, state: str, timeout: float = 15) -> dict:
        return wait_for(lambda: (s := self.status()).get("state") == state and s, timeout, 0.1,
                        f"intercom state {state}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


@pytest.fixture
def asterisk(request: pytest.FixtureRequest) -> Iterator[Asterisk]:
    direct = request.node.get_closest_marker("direct_media") is not None
    pbx = Asterisk(direct_media=direct)
    try:
        yield pbx.start()
    finally:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(pbx.log_text()[-4000:])
        pbx.cleanup()


@pytest.fixture
def intercom(tmp_path: Path, asterisk: Asterisk) -> Iterator[Callable[..., Intercom]]:
    started: list[Intercom] = []

    def make(**sip: Any) -> Intercom:
        box = Intercom(tmp_path / f"box{len(started)}", asterisk.port, **sip)
        started.append(box)
        return box.start()

    yield make
    for box in started:
        box.stop()


@pytest.fixture
def baresip(tmp_path: Path, asterisk: Asterisk) -> Iterator[Callable[..., Baresip]]:
    started: list[Baresip] = []

    def make(ext: str = "5001", **kw: Any) -> Baresip:
        phone = Baresip(asterisk, ext, tmp=tmp_path / f"baresip-{ext}-{len(started)}", **kw)
        started.append(phone)
        return phone.start()

    yield make
    for phone in started:
        phone.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def settle(seconds: float) -> None:
    time.sleep(seconds)
