"""Ports and addresses for peers that must stay on loopback: a port free for both UDP and TCP
on 127.0.0.1, and this machine's other IPv4 addresses (to keep them out of what peers
advertise). Starts nothing."""

from __future__ import annotations

import json
import socket
import subprocess


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def host_ipv4_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (``ip -j addr``)."""
    r = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True)
    if r.returncode != 0:
        return []
    return [a["local"] for link in json.loads(r.stdout) for a in link.get("addr_info", [])
            if not a.get("local", "127.").startswith("127.")]

