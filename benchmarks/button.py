"""Button press -> INVITE on the wire: gpiozero MockFactory pin driven low in the intercom's
process, INVITE timestamped by the kernel at a UDP socket standing in for the PBX (which
answers 486 so that the next press starts from idle). Reference in the same run: baresip
dialling on a ctrl_tcp command, timed to its INVITE at the same kind of socket. A second
intercom row publishes every event to a black-holed MQTT broker and webhook receiver (a TCP
listener on loopback that never accepts: the TLS handshake hangs until the client gives up), so
the row's ratio to the first shows what a dead broker costs a button (issue #22)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import statistics
import struct
import tempfile
import threading
import time
from pathlib import Path

SO_TIMESTAMPNS = 35


class FakePbx:
    """Timestamps INVITEs and answers each with 486 Busy Here."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]

    def wait_invite(self) -> int:
        while True:
            data, anc, _, addr = self.sock.recvmsg(65535, 64)
            if not data.startswith(b"INVITE "):
                continue
            stamp = next(struct.unpack("qq", p[:16]) for lvl, typ, p in anc
                         if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS)
            self._busy(data.decode(errors="replace"), addr)
            return stamp[0] * 1_000_000_000 + stamp[1]

    def _busy(self, invite: str, addr: tuple) -> None:
        head = invite.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if re.match(r"(?i)(via|from|call-id|cseq|to)\s*:", h)]
        keep = [h + ";tag=busy" if re.match(r"(?i)to\s*:", h) else h for h in keep]
        self.sock.sendto(("SIP/2.0 486 Busy Here\r\n" + "\r\n".join(keep)
                          + "\r\nContent-Length: 0\r\n\r\n").encode(), addr)


class BlackHole:
    """A TCP port on loopback whose connections complete in the kernel and are never read."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]


def black_holed_links(tmp: Path) -> dict:
    """mqtt and webhooks sections pointing at a black hole (kept open by the caller)."""
    from devtools.mosquitto import local_ca

    hole = BlackHole()
    ca = local_ca(tmp / "ca")
    black_holed_links.keep = hole  # type: ignore[attr-defined]
    return {"mqtt": {"host": "127.0.0.1", "port": hole.port, "ca_file": str(ca.ca),
                     "name": "bench"},
            "webhooks": {"urls": [f"https://127.0.0.1:{hole.port}/hook"],
                         "secret": "bench-secret-0123456789", "ca_file": str(ca.ca)}}


def intercom_latencies(n: int, black_hole: bool = False) -> list[float]:
    from gpiozero.pins.mock import MockFactory

    from firmware.app import App
    from firmware.config import parse_config

    pbx = FakePbx()
    tmp = Path(tempfile.mkdtemp(prefix="bench-button-"))
    cfg = parse_config(json.dumps({
        "sip": {"server": "127.0.0.1", "port": pbx.port, "username": "5002", "register": False,
                "keepalive": "off", "local_port": 0},
        "control": {"socket": str(tmp / "c.sock")}, "media": {"rtp_port": 0},
        "gpio": {"pin_factory": "mock"}, **(black_holed_links(tmp) if black_hole else {})}))
    factory = MockFactory()
    app = App(cfg, pin_factory=factory)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(app.start(), loop).result(10)
    pin = factory.pin(17)
    out = []
    try:
        for _ in range(n):
            while app.state != "idle":
                time.sleep(0.01)
            time.sleep(0.05)
            t0 = time.time_ns()
            pin.drive_low()
            out.append((pbx.wait_invite() - t0) / 1e6)
            pin.drive_high()
    finally:
        asyncio.run_coroutine_threadsafe(app.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    return out


def baresip_latencies(n: int) -> list[float]:
    from devtools.baresip import Baresip

    pbx = FakePbx()

    class NoPbx:
        port = pbx.port

        def registered(self, ext: str) -> bool:
            return True

    phone = Baresip(NoPbx(), "5001")  # type: ignore[arg-type]
    (phone.dir / "accounts").write_text("<sip:5001@127.0.0.1;transport=udp>;regint=0\n")
    phone.start()
    out = []
    try:
        for _ in range(n):
            time.sleep(0.2)
            t0 = time.time_ns()
            phone.command("dial", f"sip:5001@127.0.0.1:{pbx.port}")
            out.append((pbx.wait_invite() - t0) / 1e6)
    finally:
        phone.stop()
    return out


def run(n: int = 30) -> list[dict]:
    rows = []
    for name, fn in (("intercom: call button (MockFactory pin)", intercom_latencies),
                     ("intercom: the same, MQTT broker and webhook black-holed",
                      lambda k: intercom_latencies(k, black_hole=True)),
                     ("baresip 1.0.0: ctrl_tcp dial (reference)", baresip_latencies)):
        lat = sorted(fn(n))
        rows.append({"client": name, "n": len(lat), "median_ms": statistics.median(lat),
                     "p90_ms": lat[int(0.9 * (len(lat) - 1))], "max_ms": lat[-1]})
    return rows


def table(rows: list[dict]) -> str:
    ref = rows[-1]["median_ms"]
    out = ["| trigger -> INVITE | n | median ms | p90 ms | max ms | vs reference |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['client']} | {r['n']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
                   f"{r['max_ms']:.2f} | {r['median_ms'] / ref:.2f}x |")
    return "\n".join(out)
