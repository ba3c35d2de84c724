"""A stranger's SIP flood against a box in a call, and the cost of one message as transactions
pile up.

1. The intercom runs as its own process (auto-answer, tone in, null out); this process plays
   the trusted PBX on 127.0.0.1 (INVITE with SDP pointing at a timestamping receiver) and
   measures the box's 20 ms RTP send intervals from kernel arrival times, first quietly, then
   while a separate process floods the box's SIP port from 127.0.0.2 with INVITEs
   (``RATE`` per second). Reported: interval p50/p99/max, the box's CPU and RSS, and the
   messages it counted as refused.
2. In-process: microseconds per ``receive_datagram`` + ``datagrams_to_send`` + ``get_timer``
   (what the asyncio driver does for every datagram) with 0 and with 20,000 open server
   transactions, for a stranger's INVITE (dropped unparsed) and for a trusted OPTIONS (parsed,
   answered, a transaction opened). Reference in the same run: one linear pass over the 20,000
   transactions, which is what the user agent used to do for every message.
3. A TRUSTED source's worst flood (devtools/sip_flood.py from two processes: an SBC listed in
   ``sip.trusted_sources`` and a forger using the PBX's address): requests just under the size
   cap with ~100 header fields, each opening a transaction, plus oversize and over-many-fields
   ones. Reported: the box's RSS quiet, at its peak during the flood and after (target: <= 64
   MB whatever it sends), and PBX calls (INVITE from the PBX's address, retransmitted like a
   real UAC, auto-answered, ACK, BYE) answered during the flood, with their answer time against
   the same calls made quietly.
4. The cost of a stranger's 47 KB request under ``untrusted_policy: 403`` (a bounded scan of
   the fields it echoes) against what a full ``parse_message`` of it costs, in the same run.
"""

from __future__ import annotations

import json
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from devtools.box.process import Intercom
from devtools.loopback import free_port
from devtools.sip_flood import flood as sip_flood
from devtools.waiting import wait_for

from .cpu import _cpu_seconds
from .loop import PTIME_NS, SO_TIMESTAMPNS

RATE = 3000  # stranger messages per second
OPEN = 20_000


def _invite(box_port: int, src: str, src_port: int, rtp_port: int = 40000) -> bytes:
    call_id, branch = uuid.uuid4().hex, uuid.uuid4().hex
    body = (f"v=0\r\no=- 1 1 IN IP4 {src}\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
    head = (f"INVITE sip:5002@127.0.0.1:{box_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src}:{src_port};rport;branch=z9hG4bK{branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:5001@{src}>;tag={branch[:8]}\r\n"
            f"To: <sip:5002@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:5001@{src}:{src_port}>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def flood_main(port: int, seconds: float, rate: int) -> None:
    """``python -m benchmarks.flood PORT SECONDS RATE``: the stranger (127.0.0.2)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.2", 0))
    msgs = [_invite(port, "127.0.0.2", s.getsockname()[1]) for _ in range(2000)]
    sent, start = 0, time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        while sent < due:
            s.sendto(msgs[sent % len(msgs)], ("127.0.0.1", port))
            sent += 1
        time.sleep(0.002)
    print(sent)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def _intervals(rx: socket.socket, seconds: float) -> list[int]:
    arrivals: list[int] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            _, anc, _, _ = rx.recvmsg(2048, 64)
        except TimeoutError:
            continue
        for level, typ, payload in anc:
            if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", payload[:16])
                arrivals.append(sec * 1_000_000_000 + nsec)
    return [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]


def _row(name: str, intervals: list[int], cpu_pct: float, rss: float, refused: int,
         sent: int) -> dict:
    errors = sorted(abs(i - PTIME_NS) / 1000 for i in intervals)
    return {"condition": name, "packets": len(intervals) + 1, "p50_us": statistics.median(errors),
            "p99_us": errors[int(0.99 * (len(errors) - 1))], "max_us": errors[-1],
            "cpu_pct": cpu_pct, "rss_mb": rss, "refused": refused, "sent": sent}


def _drain(rx: socket.socket) -> None:
    rx.setblocking(False)
    try:
        while True:
            rx.recv(2048)
    except BlockingIOError:
        pass
    finally:
        rx.settimeout(0.5)


def call_under_flood(seconds: float, rt: int = 0) -> list[dict]:
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    pbx.settimeout(5)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.5)
    tmp = Path(tempfile.mkdtemp(prefix="intercom-flood-"))
    box = Intercom(tmp, pbx.getsockname()[1], register=False, keepalive="off",
                   local_port=free_port(), calls={"auto_answer": True},
                   audio={"capture": "tone:700", "playback": "null"})
    doc = json.loads(box.config.read_text())
    doc["media"]["realtime_priority"] = rt
    doc["media"]["timeout"] = 0  # the receiver below sends no RTP back: not a vanished peer
    doc["log"]["level"] = "info"  # debug logs every datagram: not what a box runs with
    box.config.write_text(json.dumps(doc))
    box.start()
    rows = []
    try:
        port = box.sip_port
        pbx.sendto(_invite(port, "127.0.0.1", pbx.getsockname()[1], rx.getsockname()[1]),
                   ("127.0.0.1", port))
        ok = b""
        while not ok.startswith(b"SIP/2.0 200"):
            ok = pbx.recv(65535)
        head = ok.split(b"\r\n\r\n")[0].decode().split("\r\n")
        h = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in head[1:]}
        ack = (f"ACK sip:5002@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP "
               f"127.0.0.1:{pbx.getsockname()[1]};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
               f"Max-Forwards: 70\r\nFrom: {h['from']}\r\nTo: {h['to']}\r\n"
               f"Call-ID: {h['call-id']}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
        pbx.sendto(ack.encode(), ("127.0.0.1", port))
        wait_for(lambda: box.status().get("state") == "in_call", 10, 0.1, "the call")
        time.sleep(1.0)
        pid = box.proc.pid
        for flood in (False, True):
            refused0 = box.status()["counters"].get("untrusted_dropped", 0)
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.flood", str(port),
                                     str(seconds + 2.5), str(RATE)], stdout=subprocess.PIPE,
                                    text=True) if flood else None
            time.sleep(1.5)  # the flooder is up and at full rate before the window opens
            _drain(rx)
            cpu0, t0 = _cpu_seconds(pid), time.monotonic()
            intervals = _intervals(rx, seconds)
            cpu = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
            sent = int(proc.communicate(timeout=30)[0]) if proc else 0
            st = box.status()
            assert st["state"] == "in_call", "the flood must not disturb the call"
            refused = st["counters"].get("untrusted_dropped", 0) - refused0
            name = (f"stranger floods {RATE} INVITE/s" if flood else "quiet") + \
                (f", RT {rt}" if rt else "")
            rows.append({**_row(name, intervals, cpu, _rss_mb(pid), refused, sent), "rt": rt,
                         "flood": flood})
    finally:
        box.stop()
        pbx.close()
        rx.close()
    return rows


def _per_message(ua, messages: list[tuple[bytes, tuple[str, int]]], now: float) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for data, addr in messages:
        ua.receive_datagram(data, addr, now)
        ua.datagrams_to_send()
        ua.get_timer()
    return (time.perf_counter() - t0) / len(messages) * 1e6


def cost_per_message(n: int = 2000) -> list[dict]:
    from firmware.sip.budget import BudgetLimits
    from firmware.sip.ua import UAConfig, UserAgent

    # this table measures the transaction index, not the byte budget (which would cap the open
    # transactions near 900 answered OPTIONS and evict the rest): a budget large enough for all
    roomy = BudgetLimits(total=1 << 30, registrar_reserve=1 << 29, source_share=1 << 28)

    def fresh() -> UserAgent:
        return UserAgent(UAConfig(server="127.0.0.1", port=5060, username="5002",
                                  register=False, keepalive="off", max_transactions=OPEN * 2,
                                  budget=roomy),
                         ("127.0.0.1", 5070))

    def options(i: int) -> bytes:
        return (f"OPTIONS sip:5002@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;"
                f"branch=z9hG4bK{i:012d}\r\nMax-Forwards: 70\r\nFrom: <sip:pbx@127.0.0.1>;"
                f"tag=f{i}\r\nTo: <sip:5002@127.0.0.1>\r\nCall-ID: c{i}\r\nCSeq: 1 OPTIONS\r\n"
                f"Content-Length: 0\r\n\r\n").encode()

    stranger = [(_invite(5070, "127.0.0.2", 5060), ("127.0.0.2", 5060)) for _ in range(n)]
    pbx = ("127.0.0.1", 5060)
    uas = {}
    for open_tx in (0, OPEN):
        ua = fresh()
        for i in range(open_tx):
            ua.receive_datagram(options(i), pbx, 0.0)
            ua.datagrams_to_send()
        assert ua.open_transactions == open_tx
        uas[open_tx] = ua
    rows = []
    for kind in ("stranger INVITE (dropped)", "PBX OPTIONS (answered)"):
        results = {}
        for open_tx, ua in uas.items():
            runs = []
            for rep in range(3):  # fresh branches each time: never a retransmission
                msgs = stranger if kind.startswith("stranger") else \
                    [(options(10 * OPEN + rep * n + i), pbx) for i in range(n)]
                runs.append(_per_message(ua, msgs, 1.0))
            results[open_tx] = statistics.median(runs)
        rows.append({"message": kind, "us_0": results[0], "us_open": results[OPEN]})
    ua = fresh()
    for i in range(OPEN):
        ua.receive_datagram(options(i), pbx, 0.0)
    ua.datagrams_to_send()
    t0 = time.perf_counter()
    for _ in range(20):
        min((d for tx in (*ua._client.values(), *ua._server.values())
             if (d := tx.next_deadline()) is not None), default=None)
    scan = (time.perf_counter() - t0) / 20 * 1e6
    rows.append({"message": f"reference: one pass over {OPEN:,} transactions (the old "
                            "per-message scan)", "us_0": 0.0, "us_open": scan})
    return rows


RSS_TARGET_MB = 64.0
TRUSTED_RATE = 2500  # requests per second from each of the two trusted flooders


def trusted_flood_main(src: str, port: int, seconds: float, rate: int) -> None:
    """``python -m benchmarks.flood trusted SRC PORT SECONDS RATE``: one flooder process."""
    print(sip_flood(src, port, seconds, rate))


class _Pbx:
    """The PBX's side of a call to the box, by hand on a UDP socket at 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.port = self.sock.getsockname()[1]

    def _request(self, method: str, box: int, h: dict[str, str], cseq: int) -> bytes:
        return (f"{method} sip:5002@127.0.0.1:{box} SIP/2.0\r\nVia: SIP/2.0/UDP "
                f"127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                f"Max-Forwards: 70\r\nFrom: {h['from']}\r\nTo: {h['to']}\r\n"
                f"Call-ID: {h['call-id']}\r\nCSeq: {cseq} {method}\r\n"
                f"Content-Length: 0\r\n\r\n").encode()

    def _final(self, send: bytes, box: int, call_id: str, method: str,
               limit: float) -> tuple[int, dict[str, str]] | None:
        """Send (and resend, T1 doubling) until a final response to ``method`` arrives."""
        end, interval, resend = time.monotonic() + limit, 0.5, 0.0
        while (now := time.monotonic()) < end:
            if now >= resend:
                self.sock.sendto(send, ("127.0.0.1", box))
                resend, interval = now + interval, min(interval * 2, 4.0)
            self.sock.settimeout(max(0.01, min(resend, end) - time.monotonic()))
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            head = data.split(b"\r\n\r\n")[0].decode(errors="replace").split("\r\n")
            h = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip()
                 for line in head[1:] if ":" in line}
            status = int(head[0].split()[1]) if head[0].startswith("SIP/2.0 ") else 0
            if h.get("call-id") == call_id and h.get("cseq", "").endswith(method) and \
                    status >= 200:
                return status, h
        return None

    def call(self, box: int, rtp_port: int, limit: float = 10.0) -> float | None:
        """One call: seconds from the first INVITE to its 200 (None: not answered)."""
        invite = _invite(box, "127.0.0.1", self.port, rtp_port)
        call_id = next(line.split(b": ", 1)[1].decode() for line in invite.split(b"\r\n")
                       if line.startswith(b"Call-ID: "))
        t0 = time.monotonic()
        got = self._final(invite, box, call_id, "INVITE", limit)
        if got is None or got[0] != 200:
            return None
        answered = time.monotonic() - t0
        _, h = got
        self.sock.sendto(self._request("ACK", box, h, 1), ("127.0.0.1", box))
        bye = self._final(self._request("BYE", box, h, 2), box, call_id, "BYE", limit)
        return answered if bye is not None and bye[0] == 200 else None

    def close(self) -> None:
        self.sock.close()


def trusted_flood(seconds: float) -> list[dict]:
    pbx, rx = _Pbx(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tmp = Path(tempfile.mkdtemp(prefix="intercom-trusted-flood-"))
    box = Intercom(tmp, pbx.port, register=False, keepalive="off", local_port=free_port(),
                   trusted_sources=["127.0.0.3"], calls={"auto_answer": True},
                   audio={"capture": "tone:700", "playback": "null"}, log_level="info")
    box.start()
    rows = []
    try:
        port, pid = box.sip_port, box.proc.pid
        wait_for(lambda: box.status().get("state") == "idle", 10, 0.1, "the box")
        quiet = [pbx.call(port, rx.getsockname()[1]) for _ in range(5)]
        rss_quiet = _rss_mb(pid)
        procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.flood", "trusted", src,
                                   str(port), str(seconds), str(TRUSTED_RATE)],
                                  stdout=subprocess.PIPE, text=True)
                 for src in ("127.0.0.3", "127.0.0.1")]
        peak, answers, t_end = rss_quiet, [], time.monotonic() + seconds
        time.sleep(min(2.0, seconds / 4))
        while time.monotonic() < t_end:
            answers.append(pbx.call(port, rx.getsockname()[1]))
            peak = max(peak, _rss_mb(pid))
            time.sleep(0.2)
        sent = sum(int(p.communicate(timeout=60)[0]) for p in procs)
        peak = max(peak, _rss_mb(pid))
        time.sleep(1.0)
        after = [pbx.call(port, rx.getsockname()[1]) for _ in range(3)]
        st = box.status()
        c = st["counters"]

        def ms(xs: list[float | None]) -> float:
            ok = [x for x in xs if x is not None]
            return statistics.median(ok) * 1000 if ok else float("nan")

        rows.append({"sent": sent, "rss_quiet": rss_quiet, "rss_peak": peak,
                     "rss_after": _rss_mb(pid), "calls": len(answers),
                     "answered": sum(a is not None for a in answers),
                     "answer_ms": ms(answers), "quiet_ms": ms(quiet),
                     "after_ok": all(a is not None for a in after), "idle": st["state"],
                     "dropped_budget": c.get("dropped_budget", 0),
                     "evicted": c.get("transactions_evicted", 0),
                     "too_large": c.get("rejected_too_large", 0),
                     "overload": c.get("dropped_overload", 0)})
    finally:
        box.stop()
        pbx.close()
        rx.close()
    return rows


def stranger_cost(n: int = 300) -> list[dict]:
    """µs per stranger's 47 KB request: the 403 policy's bounded scan vs a full parse."""
    from firmware.sip.message import MalformedMessageError, parse_message
    from firmware.sip.ua import UAConfig, UserAgent

    ua = UserAgent(UAConfig(server="127.0.0.1", port=5060, username="5002", register=False,
                            keepalive="off", untrusted_policy="403"), ("127.0.0.1", 5070))
    base = _invite(5070, "127.0.0.2", 5060)
    head, body = base.split(b"\r\n\r\n", 1)
    pad = b"".join(b"\r\nX-Filler-%03d: %s" % (i, b"f" * 40) for i in range(820))
    msg = head + pad + b"\r\n\r\n" + body
    assert 46_000 < len(msg) < 49_000, len(msg)
    stranger = ("127.0.0.2", 5060)
    runs_scan, runs_parse = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            ua.receive_datagram(msg, stranger, 1.0)
            ua.datagrams_to_send()
        runs_scan.append((time.perf_counter() - t0) / n * 1e6)
        t0 = time.perf_counter()
        for _ in range(n):
            try:
                parse_message(msg)
            except MalformedMessageError:
                pass
        runs_parse.append((time.perf_counter() - t0) / n * 1e6)
    assert ua.counters["untrusted_refused"] == 3 * n
    return [{"size": len(msg), "scan_us": statistics.median(runs_scan),
             "parse_us": statistics.median(runs_parse)}]


def run(seconds: float) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    return (call_under_flood(seconds) + call_under_flood(seconds, rt=50), cost_per_message(),
            trusted_flood(max(seconds, 10.0)), stranger_cost())


def table(result: tuple[list[dict], list[dict], list[dict], list[dict]]) -> str:
    calls, costs, trusted, stranger = result
    out = ["| condition | RTP packets | p50 µs | p99 µs | max µs | p99 vs quiet | box CPU % "
           "| box RSS MB | stranger msgs sent | counted as dropped |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in calls:
        quiet = next(q["p99_us"] for q in calls if not q["flood"] and q["rt"] == r["rt"])
        out.append(f"| {r['condition']} | {r['packets']} | {r['p50_us']:.0f} | "
                   f"{r['p99_us']:.0f} | {r['max_us']:.0f} | {r['p99_us'] / quiet:.2f}x | "
                   f"{r['cpu_pct']:.1f} | {r['rss_mb']:.1f} | {r['sent']} | {r['refused']} |")
    out += ["", f"| message | µs/message, 0 open | µs/message, {OPEN:,} open | ratio |",
            "|---|---:|---:|---:|"]
    for r in costs:
        ratio = f"{r['us_open'] / r['us_0']:.2f}x" if r["us_0"] else "—"
        first = f"{r['us_0']:.1f}" if r["us_0"] else "—"
        out.append(f"| {r['message']} | {first} | {r['us_open']:.1f} | {ratio} |")
    out += ["", f"| trusted flood ({TRUSTED_RATE}/s from an SBC and from the PBX's address) "
            "| requests sent | box RSS MB quiet | peak | after | peak vs target "
            f"{RSS_TARGET_MB:.0f} MB | PBX calls answered during it | answer ms (quiet) "
            "| 503 beyond share | evicted | 513 too large | idle and answering after |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in trusted:
        out.append(f"| 8 KB/100-field OPTIONS+INFO, 20 KB, 300-field | {r['sent']} | "
                   f"{r['rss_quiet']:.1f} | {r['rss_peak']:.1f} | {r['rss_after']:.1f} | "
                   f"{r['rss_peak'] / RSS_TARGET_MB:.2f}x | {r['answered']}/{r['calls']} | "
                   f"{r['answer_ms']:.0f} ({r['quiet_ms']:.0f}) | {r['dropped_budget']} | "
                   f"{r['evicted']} | {r['too_large']} | "
                   f"{'yes' if r['after_ok'] and r['idle'] == 'idle' else 'NO'} |")
    out += ["", "| stranger's request, 403 policy | bytes | µs/message (bounded scan, "
            "answered) | full parse_message of it (reference) | ratio |",
            "|---|---:|---:|---:|---:|"]
    for r in stranger:
        out.append(f"| INVITE with 820 filler fields | {r['size']} | {r['scan_us']:.1f} | "
                   f"{r['parse_us']:.0f} | {r['scan_us'] / r['parse_us']:.3f}x |")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "trusted":
        trusted_flood_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) == 4:
        flood_main(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
    else:
        print(table(run(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)))
