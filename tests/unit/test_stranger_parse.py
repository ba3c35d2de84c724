"""Answers built without a full parse: the bounded scan of the fields a stateless reply echoes
(``echo_fields``), the 403 a stranger gets under ``untrusted_policy: 403``, the 513 a trusted
source gets for a request over ``max_message_size`` or the header-field cap, and the rule that
nothing too large for a UDP datagram is ever queued."""

from __future__ import annotations

from firmware.sip.message import (
    ECHO_FIELD_MAX,
    MAX_DATAGRAM,
    MAX_HEADER_FIELDS,
    Request,
    Response,
    echo_fields,
    echo_reply,
    parse_message,
)
from firmware.sip.ua import UAConfig, UserAgent

from .test_hardening import request

PBX = ("127.0.0.1", 5060)
STRANGER = ("127.0.0.9", 5060)
HEAD = (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\n"
        b"v: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb\r\n"
        b"f: <sip:x@h>;tag=1\r\nTo: <sip:a@h>\r\ni: abc@h\r\nCSeq: 7 OPTIONS\r\n")


def ua(**cfg: object) -> UserAgent:
    return UserAgent(UAConfig(server=PBX[0], port=PBX[1], username="a", register=False,
                              keepalive="off", **cfg), ("127.0.0.1", 5070))  # type: ignore[arg-type]


def sent(u: UserAgent) -> list[bytes]:
    return [data for data, _ in u.datagrams_to_send()]


# ----------------------------------------------------------------------------- the scan
def test_echo_fields_reads_only_what_a_reply_copies() -> None:
    f = echo_fields(HEAD + b"X-Other: whatever\r\nContent-Length: 0\r\n\r\n")
    assert f is not None and f.method == b"OPTIONS" and f.call_id == b"abc@h"
    assert f.vias == (b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa",
                      b"SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb")
    reply = echo_reply(f, 403)
    resp = parse_message(reply)
    assert isinstance(resp, Response) and resp.status == 403
    assert resp.headers.get_all("Via") == [v.decode() for v in f.vias]
    assert (resp.headers.get("From"), resp.headers.get("To"), resp.call_id,
            resp.headers.get("CSeq")) == ("<sip:x@h>;tag=1", "<sip:a@h>", "abc@h", "7 OPTIONS")
    tagged = parse_message(echo_reply(f, 513, "t1"))
    assert tagged.to.tag == "t1" and tagged.headers.get("Content-Length") == "0"


def test_echo_fields_refuses_what_is_not_worth_answering() -> None:
    end = b"Content-Length: 0\r\n\r\n"
    bad = [
        HEAD.replace(b"CSeq: 7 OPTIONS", b"CSeq: 7 INVITE") + end,      # CSeq method differs
        HEAD.replace(b"i: abc@h\r\n", b"") + end,                        # no Call-ID
        HEAD + b"Call-ID: again\r\n" + end,                              # two Call-IDs
        HEAD.replace(b"To: <sip:a@h>", b"To: <sip:a@h>\r\n ;folded") + end,
        HEAD.replace(b"i: abc@h", b"i: abc\x00@h") + end,               # control character
        HEAD.replace(b"i: abc@h", b"i: " + b"c" * (ECHO_FIELD_MAX + 1)) + end,
        HEAD + b"Via: SIP/2.0/UDP h;branch=z9hG4bKc\r\n" * 15 + end,     # 17 Vias
        HEAD.replace(b"OPTIONS sip", b"OPTIONS  sip") + end,
        b"SIP/2.0 200 OK\r\n" + HEAD.split(b"\r\n", 1)[1] + end,         # a response
        b"X" * 5000,
    ]
    for data in bad:
        assert echo_fields(data) is None, data[:80]
    # fields past the scanned window are not looked for
    late = HEAD.replace(b"i: abc@h\r\n", b"") + b"X-Pad: " + b"p" * 5000 + b"\r\ni: abc@h\r\n"
    assert echo_fields(late + end) is None


# ----------------------------------------------------------------------------- strangers
def test_403_comes_from_the_scan_not_from_a_full_parse() -> None:
    """A 47 KB stranger's message whose tail a full parse refuses (a broken header line far
    down, over the size cap anyway) still gets its short 403: only the top was read."""
    u = ua(untrusted_policy="403")
    tail = b"".join(b"X-Junk-%d: %s\r\n" % (i, b"j" * 40) for i in range(900))
    data = HEAD + tail + b"this line is no header field\r\nContent-Length: 0\r\n\r\n"
    assert len(data) > 47_000
    u.receive_datagram(data, STRANGER, 0.0)
    (reply,) = sent(u)
    resp = parse_message(reply)
    assert isinstance(resp, Response) and resp.status == 403 and len(reply) < 400
    assert resp.headers.get_all("Via")[1] == "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb"
    assert u.counters["untrusted_refused"] == 1 and u.open_transactions == 0
    # unanswerable (a folded To) -> nothing, counted
    u.receive_datagram(data.replace(b"To: <sip:a@h>", b"To: <sip:a@h>\r\n\t;x"), STRANGER, 1.0)
    assert sent(u) == [] and u.counters["untrusted_unanswerable"] == 1


def test_no_reply_bigger_than_the_strangers_message() -> None:
    u = ua(untrusted_policy="403")
    short = HEAD.replace(b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\n", b"") + b"\r\n"
    u.receive_datagram(short, STRANGER, 0.0)
    assert all(len(d) <= len(short) for d in sent(u))


# ----------------------------------------------------------------------------- trusted, too big
def test_a_trusted_request_over_the_size_cap_gets_513_and_nothing_is_stored() -> None:
    u = ua()
    big = request("OPTIONS", call_id="big", extra=(("X-Pad", "p" * 9000),))
    assert len(big) > u.config.max_message_size
    u.receive_datagram(big, PBX, 0.0)
    (reply,) = sent(u)
    resp = parse_message(reply)
    assert isinstance(resp, Response) and resp.status == 513
    assert resp.call_id == "big" and resp.to.tag and resp.headers.get("CSeq") == "1 OPTIONS"
    assert u.open_transactions == 0 and u.counters["rejected_too_large"] == 1
    # as many header fields as bytes would cost: the same answer
    many = request("OPTIONS", call_id="many",
                   extra=tuple((f"X-{i}", "1") for i in range(MAX_HEADER_FIELDS)))
    assert len(many) < u.config.max_message_size
    u.receive_datagram(many, PBX, 1.0)
    assert parse_message(sent(u)[0]).status == 513 and u.open_transactions == 0
    # an ACK or a response over the cap: dropped, counted
    u.receive_datagram(big.replace(b"OPTIONS", b"ACK"), PBX, 2.0)
    u.receive_datagram(b"SIP/2.0 200 OK\r\n" + big.split(b"\r\n", 1)[1], PBX, 2.0)
    assert sent(u) == [] and u.counters["rejected_too_large"] == 4
    # just under the cap: answered normally
    ok = request("OPTIONS", call_id="ok", extra=(("X-Pad", "p" * 7000),))
    u.receive_datagram(ok, PBX, 3.0)
    assert parse_message(sent(u)[0]).status == 200


def _options_with_vias(total: int, call_id: str) -> bytes:
    """An OPTIONS of exactly ``total`` bytes, nearly all of it in 101 long Via fields (which
    every response echoes)."""
    def build(last: int) -> bytes:
        via = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKpad;x=" + "y" * 600
        tail = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKend;x=" + "z" * last
        return request("OPTIONS", call_id=call_id,
                       extra=(*(("Via", via) for _ in range(99)), ("Via", tail)))
    return build(total - len(build(0)))


def test_a_reply_too_large_for_udp_is_never_queued() -> None:
    """RFC 3261 §18: the 200 would exceed a datagram; a 513 carrying only the routing fields
    goes instead, and when even that would not fit, nothing does."""
    u = ua(max_message_size=65535)
    fits = _options_with_vias(65400, "fits")
    u.receive_datagram(fits, PBX, 0.0)
    (reply,) = sent(u)
    assert parse_message(reply).status == 200 and len(reply) <= MAX_DATAGRAM
    data = _options_with_vias(65500, "over")
    assert len(data) == 65500
    u.receive_datagram(data, PBX, 1.0)
    (reply,) = sent(u)
    resp = parse_message(reply)
    assert resp.status == 513 and len(reply) <= MAX_DATAGRAM
    assert len(resp.headers.get_all("Via")) == 101 and u.counters["too_large_to_send"] == 1
    # our own request that cannot be sent: dropped (its transaction will time out)
    req = Request(method="OPTIONS", uri="sip:x@127.0.0.1")
    req.headers.add("X", "x" * MAX_DATAGRAM)
    u.send(req, PBX)
    assert sent(u) == [] and u.counters["too_large_to_send"] == 2
