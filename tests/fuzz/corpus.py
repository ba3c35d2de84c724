"""Seeds for the fuzzers: real messages of a live call (with that call's own IDs, so mutations
reach the in-dialog code), SDP, URIs, RTP/RFC 4733 packets, and the RFC 4475 torture messages.

The live call is made deterministic (tokens from a counter), so the IDs in the seeds match the
call every fuzz target sets up afresh.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from firmware import _rtpcore as core
from firmware.sip.message import Request
from firmware.sip.ua import UAConfig, UserAgent

from ..unit.pair import A_ADDR, B_ADDR, FAST, Pair, media

STRANGER = ("127.0.0.3", 5060)
TORTURE = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "rfc4475"
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
       b"m=audio 7000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
       b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
       b"m=video 9000 RTP/AVP 96\r\n")


def _tokens(prefix: str):  # noqa: ANN202
    counter = itertools.count()
    return lambda n: f"{prefix}{next(counter):0{n}x}"[: 2 * n]


def live_call() -> Pair:
    """B (the PBX) has called A (the box) and A answered: a confirmed call, fixed IDs."""
    p = Pair.__new__(Pair)
    base = dict(register=False, keepalive="off", timers=FAST)
    p.a = UserAgent(UAConfig(server=B_ADDR[0], port=B_ADDR[1], username="a", **base), A_ADDR,
                    token=_tokens("a"))
    p.b = UserAgent(UAConfig(server=A_ADDR[0], port=A_ADDR[1], username="b", **base), B_ADDR,
                    token=_tokens("b"))
    p.now, p.wire, p.events = 0.0, [], {"a": [], "b": []}
    p.drop = lambda direction, data: False
    p.b.make_call("sip:a@127.0.0.1:5070", media(4000), p.now)
    p.pump()
    p.a.answer(media(5000), p.now)
    p.pump()
    assert p.a.call is not None and p.a.call.state == "confirmed"
    return p


def _in_dialog(p: Pair, method: str, body: bytes = b"", ctype: str = "") -> bytes:
    assert p.b.call is not None and p.b.call.dialog is not None
    req = p.b.call.dialog.create_request(method)
    req.headers.add("Via", f"SIP/2.0/UDP 127.0.0.2:5080;rport;branch=z9hG4bK{method}seed")
    req.headers.add("Contact", "<sip:b@127.0.0.2:5080>")
    if ctype:
        req.headers.add("Content-Type", ctype)
    req.body = body
    return req.to_bytes()


def sip_seeds() -> list[bytes]:
    p = live_call()
    seeds = [d for _, d in p.wire]  # INVITE, 100, 180, 200, ACK of the live call
    seeds += [
        _in_dialog(p, "INFO", b"Signal=*\r\nDuration=160\r\n", "application/dtmf-relay"),
        _in_dialog(p, "INFO", b"1", "application/dtmf"),
        _in_dialog(p, "INVITE", SDP, "application/sdp"),
        _in_dialog(p, "BYE"), _in_dialog(p, "OPTIONS"), _in_dialog(p, "ACK"),
        _in_dialog(p, "MESSAGE", b"hello", "text/plain"),
    ]
    invite = p.b.call.invite  # type: ignore[union-attr]
    cancel = Request(method="CANCEL", uri=invite.uri)
    for name in ("Via", "From", "To", "Call-ID"):
        cancel.headers.add(name, invite.headers.get(name) or "")
    cancel.headers.add("CSeq", f"{invite.cseq.number} CANCEL")
    seeds.append(cancel.to_bytes())
    seeds.append(b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa"
                 b"00000000000000000000\r\nFrom: <sip:a@127.0.0.2>;tag=a000000000000\r\n"
                 b"To: <sip:a@127.0.0.2>;tag=r\r\nCall-ID: a000000000000000000000000\r\n"
                 b"CSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"asterisk\", "
                 b"nonce=\"abc\", qop=\"auth\", algorithm=MD5\r\nContent-Length: 0\r\n\r\n")
    seeds.append(b"\r\n\r\n")
    if TORTURE.is_dir():
        seeds += [f.read_bytes() for f in sorted(TORTURE.glob("*.dat"))]
    return seeds


def sdp_seeds() -> list[bytes]:
    return [SDP, SDP.replace(b"a=sendrecv", b"a=sendonly"), b"v=0\r\no=x\r\nc=IN IP4 0.0.0.0\r\n"
            b"m=audio 0 RTP/AVP 0\r\n", SDP.replace(b"IP4 127.0.0.2", b"IP6 ::1")]


def uri_seeds() -> list[bytes]:
    return [b"sip:5001@127.0.0.1:5060;transport=tcp;lr", b"sips:alice:pw@[::1]:5061?subject=x",
            b"tel:+1-201-555-0123", b"sip:a@b.example.com;maddr=239.255.255.1;ttl=15"]


def rtp_seeds() -> list[bytes]:
    pkts = [core.rtp_pack(0, True, 1, 160, 0x1234, bytes(160)),
            core.rtp_pack(101, False, 2, 320, 0x1234, bytes([10, 0x8A, 0, 160]))]
    ext = bytearray(core.rtp_pack(8, False, 3, 480, 1, bytes(160)))
    ext[0] |= 0x30  # extension + padding bits with nothing behind them
    return pkts + [bytes(ext), bytes([0x80, 200, 0, 6]) + bytes(24)]
