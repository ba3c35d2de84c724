"""RTP on the loopback interface as the kernel sees it: a packet socket on ``lo`` (needs root)
keeps every PCMU packet of 160 samples or more, both ways, with the kernel's receive time moved
onto CLOCK_MONOTONIC. What a test or benchmark reads the box's packet clock and the audio on the
wire from, without standing between the box and its peer. The reader runs at SCHED_FIFO below the
box's loop into a 32 MB socket buffer, and counts what the kernel still dropped (``drops``): a
gap the harness made is told from one the box made.

Owns the capture and the decoding of IPv4/UDP/RTP headers; knows nothing about the box.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from .realtime import realtime

SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_STATISTICS = 263, 6


class Wire:
    """Every PCMU packet on ``lo`` from now until ``close``: ``packets`` holds
    (monotonic time, source port, destination port, RTP timestamp, payload)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # seconds of traffic, should this thread be starved (busy cores): the kernel stamps
        # packets on arrival, late reading does not move them, a full buffer drops them
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        self.sock.settimeout(0.2)
        self.packets: list[tuple[float, int, int, int, bytes]] = []
        self.dropped = 0
        self.stop = False
        # the kernel stamps CLOCK_REALTIME: move it onto the monotonic clock once
        self.offset = time.time() - time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True, name="rtp-wire")
        self.thread.start()

    def _run(self) -> None:
        with realtime():  # below the box's loop: measures without competing with it
            self._read()

    def _read(self) -> None:
        while not self.stop:
            try:
                data, anc, _, addr = self.sock.recvmsg(2048, 64)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            if addr[2] == PACKET_OUTGOING or len(data) < 40 or data[0] >> 4 != 4:
                continue  # each loopback packet shows twice: keep its arrival
            ihl = (data[0] & 15) * 4
            if data[9] != 17:
                continue
            sport, dport = struct.unpack_from("!HH", data, ihl)
            rtp = data[ihl + 8:]
            if len(rtp) < 12 + 160 or rtp[0] >> 6 != 2 or rtp[1] & 0x7F != 0:
                continue
            t = time.monotonic()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", value[:16])
                    t = sec + nsec * 1e-9 - self.offset
            ts = struct.unpack_from("!I", rtp, 4)[0]
            self.packets.append((t, sport, dport, ts, bytes(rtp[12:])))

    def times(self, dport: int, after: float = 0.0,
              before: float = float("inf")) -> list[float]:
        """When the packets to ``dport`` crossed the wire, between ``after`` and ``before``."""
        return [p[0] for p in list(self.packets) if p[2] == dport and after < p[0] < before]

    def drops(self) -> int:
        """Packets the kernel dropped from this socket (its buffer full): gaps on the wire
        that are the harness's, not the sender's."""
        if self.sock.fileno() < 0:
            return self.dropped
        self.dropped += struct.unpack("II", self.sock.getsockopt(
            SOL_PACKET, PACKET_STATISTICS, 8))[1]  # reading resets the kernel's counters
        return self.dropped

    def close(self) -> None:
        self.stop = True
        self.thread.join(1)
        self.drops()
        self.sock.close()
