"""Source trust in the user agent: only the registrar and the listed trusted sources may start
or change a call; strangers are dropped (or refused with a short 403), counted and reported at
most once a minute — in and out of dialogs, requests and responses alike."""

from __future__ import annotations

import pytest

from firmware.events import (
    CallEnded,
    DtmfReceived,
    IncomingCall,
    MediaUpdated,
    SourceRefused,
)
from firmware.sip.errors import LocalProtocolError
from firmware.sip.message import Request, Response, parse_message
from firmware.sip.trust import SourceTrust
from firmware.sip.ua import UAConfig, UserAgent

from .pair import A_ADDR, B_ADDR, Pair, media

STRANGER = ("127.0.0.3", 5060)
B_URI = "sip:b@127.0.0.2:5080"


def invite(src: tuple[str, int] = STRANGER, call_id: str = "x1") -> Request:
    req = Request(method="INVITE", uri="sip:a@127.0.0.1:5070")
    req.headers.add("Via", f"SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK{call_id}")
    req.headers.add("Max-Forwards", "70")
    req.headers.add("From", f"<sip:evil@{src[0]}>;tag=t{call_id}")
    req.headers.add("To", "<sip:a@127.0.0.1>")
    req.headers.add("Call-ID", call_id)
    req.headers.add("CSeq", "1 INVITE")
    req.headers.add("Contact", f"<sip:evil@{src[0]}:{src[1]}>")
    req.headers.add("Content-Type", "application/sdp")
    req.body = (f"v=0\r\no=- 1 1 IN IP4 {src[0]}\r\ns=-\r\nc=IN IP4 {src[0]}\r\nt=0 0\r\n"
                "m=audio 7000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n").encode()
    return req


def events(ua: UserAgent) -> list:
    out = []
    while (ev := ua.next_event()) is not None:
        out.append(ev)
    return out


def established() -> tuple[Pair, str]:
    """A (the box) called by B (its server, trusted) and answered."""
    p = Pair()
    call_id = p.b.make_call("sip:a@127.0.0.1:5070", media(4000), p.now)
    p.pump()
    p.a.answer(media(5000), p.now)
    p.pump()
    assert p.a.call is not None and p.a.call.state == "confirmed"
    return p, call_id


def in_dialog(p: Pair, method: str, src: tuple[str, int], body: bytes = b"",
              ctype: str | None = None) -> Request:
    """A request inside the live call, built from the real dialog state of B (the IDs an
    attacker sniffing the LAN would know)."""
    assert p.b.call is not None and p.b.call.dialog is not None
    req = p.b.call.dialog.create_request(method)
    req.headers.add("Via", f"SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK{method}{src[0]}")
    if ctype:
        req.headers.add("Content-Type", ctype)
    req.body = body
    return req


def test_strangers_invite_is_dropped_counted_and_reported_once_a_minute() -> None:
    p = Pair()
    data = invite().to_bytes()
    p.a.receive_datagram(data, STRANGER, 0.0)
    assert p.a.datagrams_to_send() == [], "drop: nothing at all goes back"
    assert events(p.a) == [SourceRefused("127.0.0.3", 5060, "INVITE", 1, "drop")]
    assert p.a.call is None and p.a.open_transactions == 0
    for i in range(50):
        p.a.receive_datagram(invite(call_id=f"y{i}").to_bytes(), STRANGER, 1.0 + i)
    assert events(p.a) == [], "no more than one report per source per minute"
    assert p.a.datagrams_to_send() == []
    p.a.receive_datagram(data, STRANGER, 61.0)
    assert events(p.a) == [SourceRefused("127.0.0.3", 5060, "INVITE", 51, "drop")]
    assert p.a.counters["untrusted_dropped"] == 52
    assert p.a.call is None


def test_403_policy_answers_briefly_and_never_amplifies() -> None:
    p = Pair(a_cfg={"untrusted_policy": "403"})
    data = invite().to_bytes()
    p.a.receive_datagram(data, STRANGER, 0.0)
    out = p.a.datagrams_to_send()
    assert len(out) == 1 and out[0][1] == STRANGER
    resp = parse_message(out[0][0])
    assert isinstance(resp, Response) and resp.status == 403
    assert len(out[0][0]) <= len(data), "a refusal is never larger than the request"
    assert resp.headers.get("Server") is None and b"intercom" not in out[0][0]
    assert p.a.call is None and p.a.open_transactions == 0
    assert p.a.counters["untrusted_refused"] == 1
    # an ACK, a response and garbage draw nothing even under 403
    ack = invite()
    ack.method = "ACK"
    ack.headers.set("CSeq", "1 ACK")
    for junk in (ack.to_bytes(), b"SIP/2.0 200 OK\r\n\r\n", b"\x00\x01garbage"):
        p.a.receive_datagram(junk, STRANGER, 1.0)
    assert p.a.datagrams_to_send() == []


def test_a_tiny_request_gets_no_reply_bigger_than_itself() -> None:
    p = Pair(a_cfg={"untrusted_policy": "403"})
    tiny = (b"OPTIONS sip:a@h SIP/2.0\r\nv:SIP/2.0/UDP h;branch=z9hG4bK1\r\nf:<sip:b@h>;tag=1\r\n"
            b"t:<sip:a@h>\r\ni:1\r\nCSeq:1 OPTIONS\r\n\r\n")
    p.a.receive_datagram(tiny, STRANGER, 0.0)
    for data, _ in p.a.datagrams_to_send():
        assert len(data) <= len(tiny)


def test_trusted_sources_and_registrar_addresses() -> None:
    p = Pair(a_cfg={"trusted_sources": ("10.9.0.0/16", "127.0.0.5")})
    p.a.receive_datagram(invite(("10.9.3.4", 5060), "t1").to_bytes(), ("10.9.3.4", 5060), 0.0)
    assert any(isinstance(e, IncomingCall) for e in events(p.a))
    p.a.reject(486, 0.0)
    p.a.receive_datagram(invite(("127.0.0.9", 5060), "t2").to_bytes(), ("127.0.0.9", 5060), 1.0)
    assert not any(isinstance(e, IncomingCall) for e in events(p.a))
    p.a.set_registrar_addresses(["127.0.0.9", "::1"])
    p.a.receive_datagram(invite(("127.0.0.9", 5060), "t3").to_bytes(), ("127.0.0.9", 5060), 2.0)
    assert any(isinstance(e, IncomingCall) for e in events(p.a))
    assert p.a.trust.trusted(B_ADDR), "the address we send to stays trusted"
    assert p.a.trust.trusted(("::ffff:127.0.0.9", 1)), "IPv4-mapped form of a registrar"
    assert not p.a.trust.trusted(("not-an-ip", 5060))


def test_unknown_policy_and_bad_sources_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        SourceTrust(policy="allow")
    with pytest.raises(ValueError, match="nonsense"):
        SourceTrust(trusted_sources=["nonsense"])


def test_in_dialog_requests_from_a_stranger_change_nothing() -> None:
    p, call_id = established()
    events(p.a)
    sent_before = len(p.a.counters)
    reinvite = in_dialog(p, "INVITE", STRANGER, invite().body, "application/sdp")
    info = in_dialog(p, "INFO", STRANGER, b"Signal=*\r\nDuration=160\r\n", "application/dtmf-relay")
    bye = in_dialog(p, "BYE", STRANGER)
    for req in (reinvite, info, bye):
        p.a.receive_datagram(req.to_bytes(), STRANGER, p.now)
    got = events(p.a)
    assert not any(isinstance(e, MediaUpdated | DtmfReceived | CallEnded) for e in got), got
    assert p.a.datagrams_to_send() == []
    assert p.a.call is not None and p.a.call.state == "confirmed"
    assert p.a.counters["untrusted_dropped"] == 3 and len(p.a.counters) >= sent_before
    # the same INFO from the PBX is a DTMF digit: the IDs were right, only the source was not
    info2 = in_dialog(p, "INFO", B_ADDR, b"Signal=*\r\nDuration=160\r\n", "application/dtmf-relay")
    p.a.receive_datagram(info2.to_bytes(), B_ADDR, p.now)
    assert DtmfReceived(p.a.call.call_id, "*") in events(p.a)


def test_sniffed_cancel_from_a_stranger_does_not_end_a_ringing_call() -> None:
    p = Pair()
    p.b.make_call("sip:a@127.0.0.1:5070", media(4000), p.now)
    p.pump()
    assert p.a.call is not None and p.a.call.state == "ringing"
    inv = p.b.call.invite  # type: ignore[union-attr]
    cancel = Request(method="CANCEL", uri=inv.uri)
    for name in ("Via", "From", "To", "Call-ID"):
        cancel.headers.add(name, inv.headers.get(name) or "")
    cancel.headers.add("CSeq", f"{inv.cseq.number} CANCEL")
    p.a.receive_datagram(cancel.to_bytes(), STRANGER, p.now)
    assert p.a.call.state == "ringing" and p.a.datagrams_to_send() == []
    p.a.receive_datagram(cancel.to_bytes(), B_ADDR, p.now)
    assert p.a.call.state == "ended", "the same CANCEL from the PBX does end it"


def test_forged_response_from_a_stranger_is_ignored() -> None:
    p = Pair()
    p.a.make_call(B_URI, media(4000), p.now)
    out = p.a.datagrams_to_send()
    inv = parse_message(out[0][0])
    assert isinstance(inv, Request)
    forged = Response(status=200, reason="OK")
    for name in ("Via", "From", "Call-ID", "CSeq"):
        forged.headers.add(name, inv.headers.get(name) or "")
    forged.headers.add("To", (inv.headers.get("To") or "") + ";tag=evil")
    forged.headers.add("Contact", "<sip:evil@127.0.0.3>")
    p.a.receive_datagram(forged.to_bytes(), STRANGER, p.now)
    assert p.a.call is not None and p.a.call.state == "calling"
    assert p.a.datagrams_to_send() == [], "no ACK to the forger"


def test_keepalive_pong_only_for_trusted() -> None:
    p = Pair()
    p.a.receive_datagram(b"\r\n\r\n", STRANGER, 0.0)
    assert p.a.datagrams_to_send() == []
    p.a.receive_datagram(b"\r\n\r\n", B_ADDR, 0.0)
    assert p.a.datagrams_to_send() == [(b"\r\n", B_ADDR)]


def test_config_repr_hides_the_password_and_no_version_on_the_wire() -> None:
    cfg = UAConfig(server="127.0.0.1", username="5002", password="s3cret-door")
    assert "s3cret-door" not in repr(cfg)
    ua = UserAgent(UAConfig(server=B_ADDR[0], port=B_ADDR[1], username="a", register=False,
                            keepalive="off"), A_ADDR)
    req = invite(B_ADDR, "o1")
    req.method, req.body = "OPTIONS", b""
    req.headers.set("CSeq", "1 OPTIONS")
    req.headers.remove("Content-Type")
    ua.receive_datagram(req.to_bytes(), B_ADDR, 0.0)
    data = ua.datagrams_to_send()[0][0]
    assert b"Server: intercom-firmware\r\n" in data and b"/0." not in data


def test_config_keys_reach_the_user_agent_and_the_supervisor() -> None:
    from firmware.app import policy
    from firmware.config import ConfigError, parse_config
    from firmware.startup import ua_config

    cfg = parse_config("sip: {server: pbx.example, username: '5002', password: pw,\n"
                       "      trusted_sources: [10.1.0.0/16, 192.0.2.7], untrusted_policy: 403}\n"
                       "calls: {door_code: '*1', door_code_max_failures: 3,\n"
                       "        door_code_window: 60, door_code_lockout: 900}\n")
    ua = ua_config(cfg, "192.0.2.1")
    assert ua.trusted_sources == ("10.1.0.0/16", "192.0.2.7") and ua.untrusted_policy == "403"
    assert "/" not in ua.user_agent, "no version on the wire"
    p = policy(cfg)
    assert (p.door_code_max_failures, p.door_code_window, p.door_code_lockout) == (3, 60, 900)
    defaults = parse_config("sip: {server: a, username: b}")
    assert defaults.sip.untrusted_policy == "drop" and defaults.sip.trusted_sources == ()
    assert (defaults.calls.door_code_max_failures, defaults.calls.door_code_window,
            defaults.calls.door_code_lockout) == (5, 300, 300)
    for bad, key in (("sip: {server: a, username: b, trusted_sources: [pbx.lan]}",
                      "sip.trusted_sources"),
                     ("sip: {server: a, username: b, untrusted_policy: allow}",
                      "sip.untrusted_policy"),
                     ("sip: {server: a, username: b}\ncalls: {door_code_max_failures: 0}",
                      "calls.door_code_max_failures")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config(bad)


def test_a_spoofed_flood_from_many_sources_is_logged_boundedly() -> None:
    from firmware.sip.trust import MAX_REPORTS

    trust = SourceTrust(registrar=["127.0.0.1"])
    reports = [trust.report((f"10.0.{i // 250}.{i % 250}", 5060), 5.0) for i in range(5000)]
    assert sum(r is not None for r in reports) == MAX_REPORTS, "20 log lines a minute at most"
    assert trust.report(("10.0.0.0", 5060), 70.0) is not None, "a new minute, a new report"
    assert len(trust._last_report) <= 1024 and len(trust._suppressed) <= 1024
