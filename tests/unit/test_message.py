"""Message syntax: start lines, headers, values, framing, serialisation."""

from __future__ import annotations

import pytest

from firmware.sip.errors import RemoteProtocolError
from firmware.sip.headers import (
    Headers,
    canonical_name,
    parse_auth_params,
    parse_name_addr,
    parse_params,
    parse_via,
    split_commas,
)
from firmware.sip.message import (
    MalformedMessageError,
    Request,
    Response,
    StreamParser,
    parse_message,
    validate_request,
)
from firmware.sip.uri import AbsoluteUri, SipUri, parse_sip_uri, parse_uri

INVITE = (b"INVITE sip:5002@pbx.example.com SIP/2.0\r\n"
          b"v: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\n"
          b"VIA: SIP/2.0/TCP proxy.example.com;branch=z9hG4bK2, SIP/2.0/UDP 10.0.0.9\r\n"
          b"f: \"Rec, Eption\" <sip:5001@pbx.example.com>;tag=abc\r\n"
          b"t: sip:5002@pbx.example.com\r\n"
          b"i: call-1@host\r\nCSEQ: 7 INVITE\r\nMax-Forwards: 70\r\n"
          b"Subject: a folded\r\n  subject line\r\n"
          b"m: <sip:5001@10.0.0.5:5060;transport=udp>\r\n"
          b"c: application/sdp\r\nl: 4\r\n\r\nv=0\r\n")


def test_compact_and_case_insensitive_headers() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.call_id == "call-1@host"
    assert msg.headers.get("CALL-ID") == msg.headers.get("i") == "call-1@host"
    assert msg.cseq.number == 7 and msg.cseq.method == "INVITE"
    assert msg.headers.get("subject") == "a folded subject line"
    assert msg.body == b"v=0\r"
    assert [v.transport for v in msg.vias] == ["UDP", "TCP", "UDP"]
    assert msg.top_via.branch == "z9hG4bK1" and "rport" in msg.top_via.params
    assert msg.from_.display == "Rec, Eption" and msg.from_.tag == "abc"
    contact = msg.contacts[0].uri
    assert isinstance(contact, SipUri) and contact.port == 5060 and contact.transport == "udp"


def test_serialise_round_trip_uses_canonical_names() -> None:
    msg = parse_message(INVITE)
    data = msg.to_bytes()
    assert b"\r\nCall-ID: call-1@host\r\n" in data and b"\r\nCSeq: 7 INVITE\r\n" in data
    assert b"Content-Length: 4\r\n\r\nv=0\r" in data
    again = parse_message(data)
    assert again.headers.get_all("Via") == msg.headers.get_all("Via")
    assert again.body == msg.body


def test_response_parse_and_reason() -> None:
    resp = parse_message(b"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
                         b"Content-Length: 0\r\n\r\n")
    assert isinstance(resp, Response) and resp.status == 486 and resp.reason == "Busy Here"
    assert repr(resp) == "<Response 486 Busy Here>"


@pytest.mark.parametrize("data,status", [
    (b"INVITE sip:a@b SIP/2.0\r\nBad Header\r\n\r\n", 400),
    (b"INVITE sip:a@b SIP/3.0\r\nVia: x\r\n\r\n", 505),
    (b"SIP/2.0 99 Early\r\n\r\n", 400),
    (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", 400),
    (b"INVITE sip:a@b SIP/2.0\r\n continuation first\r\n\r\n", 400),
    (b"INVITE sip:a@b SIP/2.0\r\nl: 10\r\n\r\nshort", 400),
    (b"INVITE sip:a@b SIP/2.0\r\nl: 1\r\nl: 1\r\n\r\nx", 400),
    (b"INVITE sip:a@b SIP/2.0", 400),
    (b"INV(TE sip:a@b SIP/2.0\r\n\r\n", 400),
    (b"INVITE sip:a@b SIP/2\r\n\r\n", 400),
])
def test_malformed(data: bytes, status: int) -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_message(data)
    assert info.value.status == status


def test_size_cap() -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 20000 + b"\r\n")
    assert info.value.status == 513


def test_stream_framing() -> None:
    parser = StreamParser(max_size=4096)
    one = (b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
           b"Content-Length: 3\r\n\r\nabc")
    stream = b"\r\n\r\n" + one + one
    out: list[bytes] = []
    for i in range(0, len(stream), 7):  # arbitrary split points
        out += parser.feed(stream[i:i + 7])
    assert out == [one, one]
    assert parser.pings == 1
    assert parse_message(out[0], stream=True).body == b"abc"
    with pytest.raises(RemoteProtocolError):
        StreamParser().feed(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        StreamParser(max_size=100).feed(b"OPTIONS sip:a@b SIP/2.0\r\nl: 500\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        StreamParser(max_size=100).feed(b"X" * 200)
    with pytest.raises(MalformedMessageError):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", stream=True)


def test_split_commas_respects_quotes_and_brackets() -> None:
    assert split_commas('"a, b" <sip:x@y;p=1,2>, <sip:z@w>') == \
        ['"a, b" <sip:x@y;p=1,2>', "<sip:z@w>"]
    assert split_commas('"esc \\" ,", x') == ['"esc \\" ,"', "x"]


def test_headers_container() -> None:
    h = Headers([("via", "a"), ("Via", "b, c"), ("Call-ID", "x")])
    assert h.get_all("VIA") == ["a", "b", "c"]
    assert h.get_all("call-id") == ["x"]
    h.set("via", "z")
    assert h.raw_all("Via") == ["z"] and "via" in h and "nope" not in h
    h.remove("Call-ID")
    assert h.get("call-id", "none") == "none"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("l") == "Content-Length"
    assert list(h.copy()) == list(h)


def test_name_addr_forms() -> None:
    na = parse_name_addr("Door Box <sip:5002@pbx;transport=tcp>;tag=1;expires=60")
    assert na.display == "Door Box" and na.tag == "1" and na.params["expires"] == "60"
    assert isinstance(na.uri, SipUri) and na.uri.params == {"transport": "tcp"}
    spec = parse_name_addr("sip:5002@pbx;tag=9")
    assert spec.tag == "9" and isinstance(spec.uri, SipUri) and spec.uri.params == {}
    assert str(parse_name_addr('"A \\"B\\"" <sip:a@b>')) == '"A \\"B\\"" <sip:a@b>'
    assert str(na.with_tag("2")) == '"Door Box" <sip:5002@pbx;transport=tcp>;tag=2;expires=60'
    other = parse_name_addr("<tel:+491234>")
    assert isinstance(other.uri, AbsoluteUri) and str(other.uri) == "tel:+491234"
    for bad in ('"unterminated <sip:a@b>', "Bell, Alex <sip:a@b>", "< sip:a@b >",
                "<sip:a@b", "sip:a@b?x=y", '"q" sip:a@b', "", "<sip:a@b>;;"):
        with pytest.raises(RemoteProtocolError):
            parse_name_addr(bad)


def test_uri_parsing() -> None:
    uri = parse_sip_uri("sips:alice:pw@[2001:db8::1]:5061;transport=tls;lr?subject=hi")
    assert uri.scheme == "sips" and uri.user == "alice" and uri.password == "pw"
    assert uri.host == "[2001:db8::1]" and uri.port == 5061
    assert uri.params == {"transport": "tls", "lr": None} and uri.headers == {"subject": "hi"}
    assert str(uri) == "sips:alice:pw@[2001:db8::1]:5061;transport=tls;lr?subject=hi"
    assert str(uri.without_headers().with_params(maddr="x")).endswith(";lr;maddr=x")
    assert parse_sip_uri("sip:Host.Example.COM").host == "host.example.com"
    assert parse_sip_uri("sip:user;par=1@host").user == "user;par=1"
    for bad in ("sip:", "sip:a@", "sip:a@b:99999", "sip:a@b:x", "sip:a@256.1.1.1",
                "sip:a@host_name", "nocolon", "sip:a@b;=x", "sip:a@b?noeq", "sip:a b@c",
                "sip:a@[::1]x", "1sip:a@b"):
        with pytest.raises(RemoteProtocolError):
            parse_uri(bad)
    with pytest.raises(RemoteProtocolError) as info:
        parse_sip_uri("tel:+123")
    assert info.value.status == 416


def test_via_and_params() -> None:
    via = parse_via("SIP / 2.0 / UDP 192.0.2.1 : 5070 ;branch=z9hG4bKa;received=1.2.3.4")
    assert via.sent_by == ("192.0.2.1", 5070) and via.params["received"] == "1.2.3.4"
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;received=1.2.3.4"
    assert parse_via("SIP/2.0/TCP [::1]").sent_by == ("[::1]", 5060)
    for bad in ("SIP/2.0/UDP", "HTTP/1.1/TCP a", "SIP/2.0/UDP a:0", "SIP/2.0/UDP a;;"):
        with pytest.raises(RemoteProtocolError):
            parse_via(bad)
    assert parse_params(';a=1;b;c="x;y"', "t") == {"a": "1", "b": None, "c": '"x;y"'}
    with pytest.raises(RemoteProtocolError):
        parse_params(";a=", "t")
    with pytest.raises(RemoteProtocolError):
        parse_params(';a="open', "t")
    scheme, params = parse_auth_params('Digest realm="a, b", nonce=n1, qop="auth,auth-int"')
    assert scheme == "digest" and params == {"realm": "a, b", "nonce": "n1",
                                             "qop": "auth,auth-int"}
    with pytest.raises(RemoteProtocolError):
        parse_auth_params("Digest realm")


def _request(**overrides: str) -> Request:
    headers = {"Via": "SIP/2.0/UDP h;branch=z9hG4bK1", "From": "<sip:a@b>;tag=1",
               "To": "<sip:c@d>", "Call-ID": "x", "CSeq": "1 OPTIONS", "Max-Forwards": "70"}
    headers.update(overrides)
    req = Request(method="OPTIONS", uri="sip:c@d")
    for k, v in headers.items():
        if v:
            req.headers.add(k, v)
    return req


def test_validate_request() -> None:
    validate_request(_request())
    for bad in ({"To": ""}, {"CSeq": "1 INVITE"}, {"CSeq": "99999999999 OPTIONS"},
                {"Max-Forwards": "256"}, {"Expires": "-1"}, {"Date": "yesterday"},
                {"Content-Type": "sdp"}, {"Contact": "<sip:a@b>;expires=x"}):
        with pytest.raises(RemoteProtocolError):
            validate_request(_request(**bad))
    validate_request(_request(Date="Thu, 21 Feb 2002 13:02:03 GMT", Contact="*"))
    req = _request()
    req.uri = "sip:c@d?Route=x"
    with pytest.raises(RemoteProtocolError):
        validate_request(req)
