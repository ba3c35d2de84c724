"""Runs INSIDE the kernel test guest (tests/kernel/test_guest.py starts it with the host venv's
python): UDP datagrams on lo handed to the kernel 40 ms before their departure time
(SO_TXTIME on the socket, SCM_TXTIME on each, CLOCK_MONOTONIC), first on lo's own ``noqueue``,
then after ``tc qdisc replace dev lo root fq``. Each datagram's arrival is the kernel's receive
timestamp (SO_TIMESTAMPNS, CLOCK_REALTIME, brought onto CLOCK_MONOTONIC with the offset read
beside it) and, as a cross-check, time.monotonic_ns() when recvmsg returned. Writes what it saw
as JSON to argv[1]; judges nothing (the test does). Standard library only.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import time

UPTIME_AT_START = float(open("/proc/uptime").read().split()[0])
SO_TXTIME = getattr(socket, "SO_TXTIME", 61)  # Linux's numbers (Python 3.11 lacks them);
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # each SCM_ the same as its SO_
CLOCK_ID = time.CLOCK_MONOTONIC
EARLY_NS = 40_000_000
COUNT = 5


def command(*args: str) -> dict:
    done = subprocess.run(list(args), capture_output=True, text=True)
    return {"rc": done.returncode, "out": done.stdout.strip(), "err": done.stderr.strip()}


def real_minus_mono() -> int:
    before = time.monotonic_ns()
    real = time.time_ns()
    after = time.monotonic_ns()
    return real - (before + after) // 2


def send_early() -> list[dict]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    rx.settimeout(2.0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, SO_TXTIME, struct.pack("iI", CLOCK_ID, 0))
    seen: list[dict[str, object]] = []
    for i in range(-1, COUNT):  # -1: due at once, unjudged: the first pass through TCG's
        offset = real_minus_mono()  # translation of these kernel paths took 9 ms
        sent = time.monotonic_ns()
        due = sent + (EARLY_NS if i >= 0 else 0)
        tx.sendmsg([struct.pack("!iq", i, due)],
                   [(socket.SOL_SOCKET, SO_TXTIME, struct.pack("Q", due))], 0, rx.getsockname())
        try:
            data, ancillary, _, _ = rx.recvmsg(64, socket.CMSG_SPACE(16))
        except TimeoutError:
            seen.append({"i": i, "lost": True})
            continue
        if i < 0:
            continue
        returned = time.monotonic_ns()
        stamps = [struct.unpack("qq", raw[:16]) for level, kind, raw in ancillary
                  if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS]
        kernel = stamps[0][0] * 1_000_000_000 + stamps[0][1] - offset if stamps else None
        seen.append({"i": i, "lost": False, "echo": list(struct.unpack("!iq", data)),
                     "due": due, "sent": sent,
                     "kernel_minus_due_us": None if kernel is None else (kernel - due) / 1000,
                     "returned_minus_due_us": (returned - due) / 1000})
    rx.close()
    tx.close()
    return seen


def main(out: str) -> None:
    result: dict = {"uptime_at_start": UPTIME_AT_START, "release": os.uname().release,
                    "proc_version": open("/proc/version").read().strip(),
                    "modules": sorted(line.split()[0] for line in open("/proc/modules"))}
    result["noqueue"] = {"qdisc": command("tc", "qdisc", "show", "dev", "lo"),
                         "packets": send_early()}
    result["fq"] = {"replace": command("tc", "qdisc", "replace", "dev", "lo", "root", "fq"),
                    "qdisc": command("tc", "qdisc", "show", "dev", "lo"),
                    "packets": send_early()}
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
