"""The box as a real process: ``python -m firmware run`` on a configuration from
``box_config``, driven through its control socket with the product's own CLI. What the
integration tests and benchmarks run when the process itself matters (start-up, signals,
logs, restarts)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..paths import REPO
from ..waiting import wait_for
from .config import LIVE_SIP, write_config


class Intercom:
    """``python -m firmware run`` as a real process, driven through its control socket."""

    def __init__(self, tmp: Path, server_port: int, **sip: Any) -> None:
        """``sip``: keys of the ``sip`` section, plus the sections ``calls``, ``audio``,
        ``media``, ``gpio``, ``update``, ``mqtt``, ``webhooks`` and ``system``, ``env`` (the
        process's extra environment), ``log_level`` (default debug), ``prefix`` (a command the
        box runs under, e.g. valgrind's) and ``start_timeout`` (s until the control socket)."""
        self.dir = tmp
        self.sock = tmp / "control.sock"
        self.log_path = tmp / "intercom.log"
        sections = {k: sip.pop(k) for k in ("calls", "audio", "media", "gpio", "update",
                                            "mqtt", "webhooks", "system") if k in sip}
        self.env = sip.pop("env", {})
        self.prefix: list[str] = list(sip.pop("prefix", ()))
        self.start_timeout: float = sip.pop("start_timeout", 10)
        if not sip.get("local_port"):
            sip.pop("local_port", None)  # 0 or None: a free one, as box_config picks
        log_level = sip.pop("log_level", "debug")
        self.config = write_config(tmp, server_port, sip={**LIVE_SIP, **sip},
                                   log={"level": log_level}, **sections)
        self.sip_port = json.loads(self.config.read_text())["sip"]["local_port"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Intercom:
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "firmware", "run", "--config", str(self.config)],
            cwd=REPO, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        wait_for(lambda: self.sock.exists() or self.proc.poll() is not None, self.start_timeout,
                 0.05, "the control socket")
        assert self.proc.poll() is None, self.log()
        return self

    def cmd(self, *args: str) -> dict:
        r = self._cli(*args)
        out = r.stdout.strip()
        return json.loads(out) if out.startswith("{") else {"ok": False, "error": r.stderr}

    def says(self, *args: str) -> str:
        """What the CLI prints for people (``says("status")``); stderr too when it fails."""
        r = self._cli(*args)
        return r.stdout if r.returncode == 0 else r.stdout + r.stderr

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "firmware", "--socket", str(self.sock),
                               *args], capture_output=True, text=True, cwd=REPO, timeout=20)

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
