"""dnsmasq (Debian ``dnsmasq-base``) as the tests' DNS server: NAPTR, SRV and A records of a
test domain served on 127.0.0.1 at a port of its own, nothing forwarded, no hosts file, no
DHCP. What the box's RFC 3263 resolution asks in the failover tests.

Nothing here stands in for the intercom: this is the DNS server it must work with.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from .loopback import free_port
from .waiting import wait_for


class Dnsmasq:
    """``records``: dnsmasq options such as ``--srv-host=...``, ``--host-record=...``,
    ``--naptr-record=...``."""

    def __init__(self, records: list[str], log: Path) -> None:
        self.port = free_port()
        self.records = records
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Dnsmasq:
        self.proc = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
             "--no-hosts", "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.1",
             f"--port={self.port}", "--pid-file=", "--user=root",
             "--log-queries", "--log-facility=-", *self.records],
            stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        wait_for(self._answers, 10, 0.1, "dnsmasq to answer")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited: {self.log.read_text(errors='replace')}")
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x01\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.sendto(query, ("127.0.0.1", self.port))
            try:
                return s.recv(512)[:2] == b"\x12\x34"
            except OSError:
                return False

    @property
    def server(self) -> str:
        """The ``sip.dns_servers`` entry that reaches it."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
