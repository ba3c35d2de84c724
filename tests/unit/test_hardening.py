"""Inputs an attacker (or a broken peer) sends that used to escape ``receive_datagram``, leak
transactions, stop registration refreshes or leave a call that cannot be hung up."""

from __future__ import annotations

import pytest

from devtools.registrar import SERVER, UA_ADDR
from firmware.events import CallEnded, IncomingCall, RegistrationFailed
from firmware.sip.errors import RemoteProtocolError
from firmware.sip.headers import parse_cseq, parse_via
from firmware.sip.message import Request, Response, parse_message
from firmware.sip.sdp import parse_sdp
from firmware.sip.ua import UAConfig, UserAgent
from firmware.sip.uri import parse_uri

from .pair import B_ADDR, Pair, media

SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0\r\n")


def request(method: str = "INVITE", *, call_id: str = "h1", via: str | None = None,
            cseq: str | None = None, extra: tuple[tuple[str, str], ...] = (),
            body: str = "", contact: str = "<sip:b@127.0.0.2:5080>") -> bytes:
    if via is None:
        via = f"SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bK{call_id}"
    lines = [f"{method} sip:a@127.0.0.1:5070 SIP/2.0", f"Via: {via}",
             "Max-Forwards: 70", f"From: <sip:b@127.0.0.2>;tag=f{call_id}",
             "To: <sip:a@127.0.0.1>", f"Call-ID: {call_id}",
             f"CSeq: {cseq or '1 ' + method}", f"Contact: {contact}"]
    lines += [f"{k}: {v}" for k, v in extra]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def drain(ua: UserAgent) -> list[Response]:
    out = []
    for data, _ in ua.datagrams_to_send():
        msg = parse_message(data)
        assert isinstance(msg, Response)
        out.append(msg)
    return out


def settle(p: Pair, seconds: float = 40.0) -> None:
    """Run every timer of A for ``seconds`` (transactions reach Terminated)."""
    end = p.now + seconds
    while (t := p.a.get_timer()) is not None and t <= end:
        p.now = max(p.now, t)
        p.a.handle_timer(p.now)
        p.a.datagrams_to_send()
    p.now = end


HOSTILE = [
    request(body=SDP.format(port="8²00")),                       # str.isdigit accepts '²'
    request(body=SDP.format(port="٨٠٠٠")),                        # Arabic-Indic digits
    request(body=SDP.format(port="9" * 5000)),                   # int() refuses > 4300 digits
    request(body=SDP.format(port="8000").replace("AVP 0", "AVP 0²") +
            "a=ptime:²0\r\na=rtpmap:0² PCMU/8000\r\n"),
    request(body=SDP.format(port="8000").replace("IN IP4 127.0.0.2", "IN IP6 ::1")),
    request(cseq="1² INVITE"),
    request(cseq="9" * 5000 + " INVITE"),
    request(via="SIP/2.0/UDP 127.0.0.2:5²80;branch=z9hG4bKx"),
    request(via="SIP/2.0/UDP 127.0.0.2:" + "9" * 5000 + ";branch=z9hG4bKx"),
    request(via=""),
    request(extra=(("Max-Forwards", "7" * 5000),)),
    request(extra=(("Record-Route", "<sip:x"),)),
    request(extra=(("Record-Route", "<tel:+123>"),)),
    request(contact="<mailto:x@y>", call_id="h2"),
    request("INFO", extra=(("Content-Type", "application/dtmf-relay"),), call_id="h3"),
    b"SIP/2.0 1\xc2\xb2\xc2\xb2 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia:\r\nCSeq: 1 INVITE\r\nCall-ID: a\r\nFrom: <sip:a@b>\r\n"
    b"To: <sip:a@b>\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"INVITE sip:a@127.0.0.1:\xd9\xa8 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKq\r\n\r\n",
    b"INVITE sip:a@\xc2\xb2.1.1.1 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKq\r\n\r\n",
]


@pytest.mark.parametrize("data", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_datagram_never_escapes_and_leaves_nothing_open(data: bytes) -> None:
    p = Pair()
    p.a.receive_datagram(data, B_ADDR, 0.0)
    for resp in drain(p.a):
        assert resp.status in (100, 400, 415, 416, 481, 488, 513), resp
    assert p.a.call is None or p.a.call.state == "ended"
    assert not any(isinstance(e, IncomingCall) for e in iter(p.a.next_event, None))
    settle(p)
    assert p.a.open_transactions == 0, "every transaction is reaped"


def test_empty_via_values_are_not_echoed() -> None:
    p = Pair()
    p.a.receive_datagram(request("OPTIONS", extra=(("Via", ""),)), B_ADDR, 0.0)
    (data, _), = p.a.datagrams_to_send()
    assert b"Via: \r\n" not in data and data.count(b"Via: SIP/2.0/UDP") == 1


def test_sdp_port_with_superscript_digit_is_answered_400_and_reaped() -> None:
    p = Pair()
    p.a.receive_datagram(request(body=SDP.format(port="8²00")), B_ADDR, 0.0)
    assert [r.status for r in drain(p.a)] == [100, 400]
    settle(p)
    assert p.a.open_transactions == 0


@pytest.mark.parametrize("parse,text", [
    (parse_cseq, "²2 INVITE"), (parse_via, "SIP/2.0/UDP h:٨"), (parse_uri, "sip:a@h:²"),
    (parse_uri, "sip:a@²²².1.1.1"), (parse_sdp, SDP.format(port="1²").encode()),
])
def test_parsers_raise_only_protocol_errors(parse, text) -> None:  # noqa: ANN001
    with pytest.raises(RemoteProtocolError):
        parse(text)


def test_dtmf_info_bodies_are_validated() -> None:
    p, _ = _established()
    for body, digit in ((b"Signal=10\r\n", "*"), (b"Signal=5\r\n", "5"), (b"Signal=16\r\n", None),
                        (b"Signal=\xff\r\n", None), (b"Signal=x\r\n", None),
                        (b"Signal=b\r\n", "B")):
        req = p.b.call.dialog.create_request("INFO")  # type: ignore[union-attr]
        req.headers.add("Via", f"SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bKi{len(body)}{digit}")
        req.headers.add("Content-Type", "application/dtmf-relay")
        req.body = body
        p.a.receive_datagram(req.to_bytes(), B_ADDR, p.now)
        p.a.datagrams_to_send()
        got = [e.digit for e in iter(p.a.next_event, None) if hasattr(e, "digit")]
        assert got == ([digit] if digit else []), body


def _established() -> tuple[Pair, str]:
    p = Pair()
    call_id = p.b.make_call("sip:a@127.0.0.1:5070", media(4000), p.now)
    p.pump()
    p.a.answer(media(5000), p.now)
    p.pump()
    return p, call_id


def test_local_hangup_ends_the_call_even_when_no_bye_can_be_built() -> None:
    p, _ = _established()
    call = p.a.call
    assert call is not None and call.dialog is not None
    call.dialog.route_set = ["<sip:x"]  # what an unvalidated Record-Route used to leave here
    p.a.hangup(p.now)
    assert call.state == "ended"
    ended = [e for e in iter(p.a.next_event, None) if isinstance(e, CallEnded)]
    assert ended and ended[0].reason == "local hangup"
    assert p.a.counters["bye_unsendable"] == 1


def test_unusable_record_route_in_a_2xx_ends_the_outgoing_call_cleanly() -> None:
    p = Pair()
    p.a.make_call("sip:b@127.0.0.2:5080", media(4000), p.now)
    p.pump()
    p.b.answer(media(5000), p.now)
    data = p.b.datagrams_to_send()[-1][0]
    assert data.startswith(b"SIP/2.0 200")
    data = data.replace(b"Contact:", b"Record-Route: <sip:x\r\nContact:", 1)
    p.a.receive_datagram(data, B_ADDR, p.now)
    assert p.a.call is not None and p.a.call.state == "ended"
    assert "unusable 200" in [e for e in iter(p.a.next_event, None)
                              if isinstance(e, CallEnded)][0].reason


def test_server_transactions_are_capped() -> None:
    p = Pair(a_cfg={"max_transactions": 10})
    for i in range(12):
        p.a.receive_datagram(request("OPTIONS", call_id=f"o{i}"), B_ADDR, 0.0)
    statuses = [r.status for r in drain(p.a)]
    assert statuses == [200] * 10 + [503, 503]
    assert p.a.counters["dropped_overload"] == 2
    settle(p)
    assert p.a.open_transactions == 0


def test_deadline_index_drives_timers_without_scanning() -> None:
    p = Pair()
    for i in range(500):
        p.a.receive_datagram(request("OPTIONS", call_id=f"x{i}"), B_ADDR, i * 0.01)
    p.a.datagrams_to_send()
    assert p.a.open_transactions == 500
    # Timer J (64*T1 = 32 s) of the first one is the next deadline
    assert p.a.get_timer() == pytest.approx(32.0)
    p.a.handle_timer(32.0 + 2.495)
    assert p.a.open_transactions == 250
    p.a.handle_timer(40.0)
    assert p.a.open_transactions == 0 and p.a.get_timer() is None


# ----------------------------------------------------------------------------- registration
def _ua() -> UserAgent:
    return UserAgent(UAConfig(server=SERVER[0], port=SERVER[1], username="5002",
                              password="pw", keepalive="off", retry_min=2, retry_max=8), UA_ADDR)


def _reply(ua: UserAgent, status: int, extra: str) -> bytes:
    data = ua.datagrams_to_send()[-1][0]
    req = parse_message(data)
    assert isinstance(req, Request)
    h = req.headers
    head = (f"SIP/2.0 {status} X\r\nVia: {h.get('Via')}\r\nFrom: {h.get('From')}\r\n"
            f"To: {h.get('To')};tag=r\r\nCall-ID: {h.get('Call-ID')}\r\nCSeq: {h.get('CSeq')}\r\n")
    return head.encode() + extra.encode("utf-8", "surrogateescape") + b"Content-Length: 0\r\n\r\n"


@pytest.mark.parametrize("bad", [
    'WWW-Authenticate: Digest realm="a", nonce="\udcff\udcfe"\r\n',
    'WWW-Authenticate: Digest realm="\udcc3(", nonce="n"\r\n',
    'WWW-Authenticate: Digest realm="a", nonce="' + "n" * 5000 + '"\r\n',
])
def test_unusable_challenge_fails_registration_loudly_and_keeps_retrying(bad: str) -> None:
    ua = _ua()
    ua.start(0.0)
    ua.receive_datagram(_reply(ua, 200, "Expires: 60\r\n"), SERVER, 0.1)
    assert ua.registered
    list(iter(ua.next_event, None))
    ua.handle_timer(31.0)  # refresh
    ua.receive_datagram(_reply(ua, 401, bad), SERVER, 31.1)
    evs = list(iter(ua.next_event, None))
    assert any(isinstance(e, RegistrationFailed) for e in evs), evs
    assert not ua.registered, "registered must not stay true after a failed refresh"
    assert ua.get_timer() is not None and ua.get_timer() <= 33.2, "and it retries"
    ua.handle_timer(33.2)
    assert any(d.startswith(b"REGISTER ") for d, _ in ua.datagrams_to_send())


def test_garbage_expires_in_a_200_is_survived() -> None:
    ua = _ua()
    ua.start(0.0)
    ua.receive_datagram(_reply(ua, 200, "Expires: ²²\r\nMin-Expires: 9²\r\n"), SERVER, 0.1)
    assert ua.registered and ua.get_timer() is not None


def test_unparseable_contact_expires_in_a_200_fails_and_retries() -> None:
    ua = _ua()
    ua.start(0.0)
    data = _reply(ua, 200, f"Contact: <sip:5002@{UA_ADDR[0]}:{UA_ADDR[1]}>;expires=²\r\n")
    ua.receive_datagram(data, SERVER, 0.1)
    assert not ua.registered
    assert any(isinstance(e, RegistrationFailed) for e in iter(ua.next_event, None))
    assert ua.get_timer() is not None
