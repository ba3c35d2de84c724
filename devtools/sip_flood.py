"""A trusted peer gone bad: floods the box's SIP port with the costliest requests it may send.

What a source the box trusts (an SBC in ``sip.trusted_sources``, or anyone forging the PBX's
address over UDP) can send to make the box store as much as possible: requests just under
``sip.max_message_size`` with as many header fields as the parser takes, each with a fresh
branch so every one opens a server transaction; plus requests over the size cap and over the
header cap, which must cost a bounded scan and nothing stored. Used by
tests/integration/test_trusted_flood.py and benchmarks/flood.py, as a separate process so that
the flood does not share the box's interpreter.

``python -m devtools.sip_flood SRC_IP BOX_PORT SECONDS RATE [SIZE]`` prints what it sent.
"""

from __future__ import annotations

import itertools
import socket
import sys
import time
import uuid

KINDS = ("options", "info", "oversize", "headers")


def request(kind: str, box_port: int, src: str, src_port: int, size: int = 8000,
            n: int = 0) -> bytes:
    """One flood request of ``kind``: ``options``/``info`` of about ``size`` bytes with ~100
    header fields (stored if admitted); ``oversize`` (2.5x ``size``: refused before parsing);
    ``headers`` (300 short fields: over the header-count cap)."""
    tag = uuid.uuid4().hex
    method = "INFO" if kind == "info" else "OPTIONS"
    head = [f"{method} sip:5002@127.0.0.1:{box_port} SIP/2.0",
            f"Via: SIP/2.0/UDP {src}:{src_port};rport;branch=z9hG4bK{tag}",
            "Max-Forwards: 70", f"From: <sip:flood@{src}>;tag={tag[:10]}",
            "To: <sip:5002@127.0.0.1>", f"Call-ID: {tag}-{n}@{src}", f"CSeq: 1 {method}"]
    if kind == "headers":
        head += [f"X-{i}: {i}" for i in range(300)]
    else:
        target = int(size * 2.5) if kind == "oversize" else size
        fields = 100
        pad = max(1, (target - sum(len(h) + 2 for h in head) - 40) // fields - 12)
        head += [f"X-Pad-{i:03d}: {'p' * pad}" for i in range(fields)]
    head.append("Content-Length: 0")
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def flood(src: str, box_port: int, seconds: float, rate: int, size: int = 8000,
          kinds: tuple[str, ...] = KINDS) -> int:
    """Send ``rate`` requests a second for ``seconds`` from ``src``; returns how many."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    port = s.getsockname()[1]
    sent, start = 0, time.monotonic()
    cycle = itertools.cycle(kinds)
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        while sent < due:
            try:
                s.sendto(request(next(cycle), box_port, src, port, size, sent),
                         ("127.0.0.1", box_port))
            except OSError:
                pass  # our own buffer full: the box's problem is what arrives, not this
            sent += 1
        time.sleep(0.002)
    s.close()
    return sent


if __name__ == "__main__":
    args = sys.argv[1:]
    print(flood(args[0], int(args[1]), float(args[2]), int(args[3]),
                int(args[4]) if len(args) > 4 else 8000))
