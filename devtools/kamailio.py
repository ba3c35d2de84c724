"""Kamailio (Debian ``kamailio``) as the registrar and proxy in front of the tests' Asterisk:
``pbx/kamailio/kamailio.cfg`` unchanged, its settings given as pre-processor defines on the
command line, run in the foreground on a loopback address of its own (so that the box's trust
in its registrar and Asterisk's address are told apart), with its own runtime directory.

Nothing here stands in for the intercom: this is a proxy it must work with.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from pathlib import Path

from .asterisk import PASSWORDS
from .loopback import free_port
from .paths import REPO
from .processes import end
from .waiting import wait_for

CONFIG = REPO / "pbx" / "kamailio" / "kamailio.cfg"
ADDRESS = "127.0.0.3"  # not Asterisk's 127.0.0.1: only this address is the box's registrar


def _free_port_on(host: str) -> int:
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no free UDP port on {host}")


class Kamailio:
    """kamailio -DD -E on ``address``:``port`` (UDP), relaying to Asterisk at
    ``asterisk_ip``:``asterisk_port``."""

    def __init__(self, asterisk_port: int, tmp: Path | None = None, asterisk_ip: str = "127.0.0.1",
                 address: str = ADDRESS) -> None:
        self.address = address
        self.port = _free_port_on(address)
        self.asterisk = (asterisk_ip, asterisk_port)
        self.dir = Path(tmp or f"/tmp/kamailio-{uuid.uuid4().hex[:8]}")
        self.run_dir = self.dir / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "kamailio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def defines(self) -> list[str]:
        """The settings kamailio.cfg takes from the command line."""
        return [f"LISTEN=udp:{self.address}:{self.port}",
                f'ASTERISK_IP="{self.asterisk[0]}"', f"ASTERISK_PORT={self.asterisk[1]}",
                'BOX_USER="5002"', f'BOX_PASSWORD="{PASSWORDS["5002"]}"']

    def start(self) -> Kamailio:
        args = [shutil.which("kamailio") or "/usr/sbin/kamailio", "-f", str(CONFIG), "-DD", "-E",
                "-Y", str(self.run_dir), "-P", str(self.run_dir / "kamailio.pid"),
                "-w", str(self.dir), "-m", "32", "-M", "4"]
        for define in self.defines:
            args += ["-A", define]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc is not None and (self.proc.poll() is not None
                                                    or self._answers()),
                 15, 0.2, "Kamailio to answer OPTIONS")
        if self.proc.poll() is not None:
            raise RuntimeError(f"kamailio exited ({self.proc.returncode}):\n{self.log_text()}")
        return self

    def _answers(self) -> bool:
        """An OPTIONS to the proxy itself is answered 200 (its keep-alive rule)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.3)
            port = s.getsockname()[1]
            branch = uuid.uuid4().hex
            s.sendto((f"OPTIONS sip:{self.address}:{self.port} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{branch}\r\n"
                      "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\n"
                      f"To: <sip:{self.address}>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n"
                      "Content-Length: 0\r\n\r\n").encode(), (self.address, self.port))
            try:
                return s.recv(65535).startswith(b"SIP/2.0 200")
            except (TimeoutError, ConnectionRefusedError):
                return False

    def stop(self) -> None:
        end(self.proc)
        self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
