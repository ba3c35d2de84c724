"""Call flows between two real user agents wired in memory (the pair harness): answer, hang-up,
busy, reject, CANCEL and its races, ACK loss, codecs, re-INVITE and hold, INFO, late offers.
The call's own timers are in test_call_timers.py, challenged INVITEs in test_call_challenges.py."""

from __future__ import annotations

import pytest

from firmware.events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    DtmfReceived,
    IncomingCall,
    MediaUpdated,
)
from firmware.sip.message import Request, Response, parse_message
from firmware.sip.sdp import LocalMedia

from .pair import Pair, media

B_URI = "sip:b@127.0.0.2:5080"


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


def first_lines(p: Pair, direction: str) -> list[str]:
    return [d.split(b"\r\n")[0].decode() for dr, d in p.wire if dr == direction]


def ring(p: Pair) -> str:
    call_id = p.a.make_call(B_URI, media(4000), p.now)
    p.pump()
    return call_id


def test_call_answer_and_caller_hangs_up() -> None:
    p = Pair()
    ring(p)
    assert kinds(p.events["a"]) == ["CallRinging"]
    assert kinds(p.events["b"]) == ["IncomingCall"]
    assert p.b.call is not None and p.b.call.state == "ringing"
    p.b.answer(media(5000), p.now)
    p.pump()
    a_ans = p.events["a"][-1]
    b_ans = p.events["b"][-1]
    assert isinstance(a_ans, CallAnswered) and a_ans.media is not None
    assert a_ans.media.remote_port == 5000 and a_ans.media.codec == "PCMU"
    assert isinstance(b_ans, CallAnswered) and b_ans.media is not None
    assert b_ans.media.remote_port == 4000 and b_ans.media.dtmf_payload_type == 101
    assert first_lines(p, "a>b") == ["INVITE sip:b@127.0.0.2:5080 SIP/2.0",
                                     "ACK sip:b@127.0.0.2:5080 SIP/2.0"]
    p.a.hangup(p.now)
    p.pump()
    assert p.events["a"][-1] == CallEnded(a_ans.call_id, "local hangup", None, False)
    assert isinstance(p.events["b"][-1], CallEnded) and p.events["b"][-1].by_remote
    assert first_lines(p, "b>a")[-1] == "SIP/2.0 200 OK"


def test_callee_hangs_up() -> None:
    p = Pair()
    ring(p)
    p.b.answer(media(5000), p.now)
    p.pump()
    p.b.hangup(p.now)
    p.pump()
    assert p.events["a"][-1].reason == "remote hangup"
    assert any(line.startswith("BYE sip:a@") for line in first_lines(p, "b>a"))


def test_busy_callee_answers_486() -> None:
    p = Pair()
    ring(p)
    # a second INVITE (new call) while B is ringing
    third = Pair()
    third.b = p.b
    call2 = third.a.make_call(B_URI, media(4100), third.now)
    third.pump()
    ended = [e for e in third.events["a"] if isinstance(e, CallEnded)]
    assert ended and ended[0].call_id == call2 and ended[0].status == 486
    assert p.b.call is not None and p.b.call.state == "ringing", "first call unaffected"


def test_reject_gives_603() -> None:
    p = Pair()
    ring(p)
    p.b.reject(603, p.now)
    p.pump()
    end = p.events["a"][-1]
    assert isinstance(end, CallEnded) and end.status == 603 and end.by_remote
    assert first_lines(p, "a>b")[-1].startswith("ACK"), "non-2xx final is ACKed"


def test_cancel_before_answer() -> None:
    p = Pair()
    ring(p)
    p.a.hangup(p.now)
    p.pump()
    assert [ln.split()[0] for ln in first_lines(p, "a>b")] == ["INVITE", "CANCEL", "ACK"]
    assert "SIP/2.0 487 Request Terminated" in first_lines(p, "b>a")
    assert p.events["a"][-1].reason == "cancelled"
    assert p.events["b"][-1].reason == "cancelled by caller"
    cancel = parse_message(p.sent("a>b", b"CANCEL")[0])
    invite = parse_message(p.sent("a>b", b"INVITE")[0])
    assert cancel.top_via.branch == invite.top_via.branch
    assert cancel.cseq.number == invite.cseq.number


def test_cancel_waits_for_a_provisional_response() -> None:
    p = Pair()
    held: list[bytes] = []
    p.drop = lambda d, data: d == "b>a" and not held.append(data)  # hold every answer
    p.a.make_call(B_URI, media(4000), p.now)
    p.pump()
    p.a.hangup(p.now)
    p.pump()
    assert p.sent("a>b", b"CANCEL") == [], "no CANCEL before any provisional (§9.1)"
    p.drop = lambda d, data: False
    for data in held[:1]:  # deliver the 100 Trying
        p.a.receive_datagram(data, ("127.0.0.2", 5080), p.now)
    p.pump()
    assert len(p.sent("a>b", b"CANCEL")) == 1


def test_200_racing_cancel_is_acked_then_byed() -> None:
    p = Pair()
    ring(p)
    p.b.answer(media(5000), p.now)
    ok = [d for d in p.b.datagrams_to_send()]
    p.a.hangup(p.now)  # CANCEL leaves before the 200 arrives
    cancel = p.a.datagrams_to_send()
    assert cancel[0][0].startswith(b"CANCEL")
    for data, _ in ok:
        p.a.receive_datagram(data, ("127.0.0.2", 5080), p.now)
    p.b.receive_datagram(cancel[0][0], ("127.0.0.1", 5070), p.now)
    p.pump()
    # §9.1 / §13.2.2.4: the caller ACKs the 2xx that beat its CANCEL, then ends the dialog.
    sent = [parse_message(d) for dr, d in p.wire if dr == "a>b"]
    assert [m.method for m in sent if isinstance(m, Request)] == ["INVITE", "ACK", "BYE"]
    invite, ack, bye = sent
    answer = parse_message(ok[-1][0])
    assert isinstance(answer, Response) and answer.status == 200
    assert ack.cseq.number == invite.cseq.number and ack.cseq.method == "ACK"
    assert bye.cseq.number == invite.cseq.number + 1
    for m in (ack, bye):
        assert m.call_id == invite.call_id and m.to.tag == answer.to.tag != ""
    # The callee answers the late CANCEL 200 without a 487 (its INVITE is already final) and
    # the BYE 200.
    replies = [parse_message(d) for dr, d in p.wire if dr == "b>a"]
    finals = [(r.status, r.cseq.method) for r in replies
              if isinstance(r, Response) and r.status >= 200]
    assert finals == [(200, "CANCEL"), (200, "BYE")]
    assert isinstance(p.events["b"][-1], CallEnded) and p.events["b"][-1].reason == "remote hangup"
    assert isinstance(p.events["a"][-1], CallEnded) and p.events["a"][-1].reason == "cancelled"
    assert p.b.call is not None and p.b.call.state == "ended"
    wire = len(p.wire)
    p.advance(40)
    assert len(p.wire) == wire, "nothing retransmitted: the ACK stopped the 2xx, BYE answered"


def test_lost_ack_makes_the_callee_retransmit_200() -> None:
    p = Pair()
    ring(p)
    p.drop = lambda d, data: d == "a>b" and data.startswith(b"ACK") and len(
        p.sent("a>b", b"ACK")) == 1
    p.b.answer(media(5000), p.now)
    p.advance(2.0)
    oks = [ln for ln in first_lines(p, "b>a") if ln == "SIP/2.0 200 OK"]
    assert len(oks) >= 2, "2xx retransmitted until ACK"
    assert len(p.sent("a>b", b"ACK")) >= 2, "each 2xx retransmission is ACKed again"
    n = len(oks)
    p.advance(40)
    assert len([ln for ln in first_lines(p, "b>a") if ln == "SIP/2.0 200 OK"]) == n, \
        "retransmission stops once the ACK arrived"
    assert p.b.call is not None and p.b.call.state == "confirmed"


def test_ack_never_arrives_callee_hangs_up() -> None:
    p = Pair()
    ring(p)
    p.drop = lambda d, data: d == "a>b" and data.startswith(b"ACK")
    p.b.answer(media(5000), p.now)
    p.advance(40)
    assert p.events["b"][-1].reason == "no ACK from caller"
    assert p.sent("b>a", b"BYE")


def test_retransmitted_invite_rings_once() -> None:
    p = Pair()
    p.drop = lambda d, data: d == "b>a" and len(p.sent("b>a", b"SIP/2.0 1")) <= 2
    p.a.make_call(B_URI, media(4000), p.now)
    p.advance(1.6)
    invites = p.sent("a>b", b"INVITE")
    assert len(invites) >= 2 and len(set(invites)) == 1, "Timer A retransmits the same INVITE"
    assert kinds(p.events["b"]).count("IncomingCall") == 1


def test_invite_timeout_ends_call_with_408() -> None:
    p = Pair(a_cfg={"ring_timeout": 60.0})
    p.drop = lambda d, data: d == "a>b"
    p.a.make_call(B_URI, media(4000), p.now)
    p.advance(40)
    invites = p.sent("a>b", b"INVITE")
    assert len(invites) == 7, "Timer A doubles: 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5 s"
    end = p.events["a"][-1]
    assert isinstance(end, CallEnded) and end.status == 408


def test_ring_timeout_both_ways() -> None:
    p = Pair(a_cfg={"ring_timeout": 10.0}, b_cfg={"ring_timeout": 20.0})
    ring(p)
    p.advance(11)
    assert p.events["a"][-1].reason == "no answer"
    assert p.sent("a>b", b"CANCEL")
    q = Pair(a_cfg={"ring_timeout": 60.0}, b_cfg={"ring_timeout": 5.0})
    ring(q)
    q.advance(6)
    assert q.events["b"][-1].reason == "not answered"
    assert q.events["a"][-1].status == 480


def test_no_common_codec_gives_488() -> None:
    p = Pair(b_cfg={"codecs": ("PCMA",)})
    p.a.make_call(B_URI, media(4000).__class__("127.0.0.1", 4000, ("PCMU",)), p.now)
    p.pump()
    end = p.events["a"][-1]
    assert isinstance(end, CallEnded) and end.status == 488
    assert p.events["b"] == []


def test_codec_order_follows_the_offer() -> None:
    p = Pair()
    offer_media = media(4000).__class__("127.0.0.1", 4000, ("PCMA", "PCMU"))
    p.a.make_call(B_URI, offer_media, p.now)
    p.pump()
    p.b.answer(media(5000), p.now)
    p.pump()
    assert p.events["b"][-1].media.codec == "PCMA"
    assert p.events["a"][-1].media.codec == "PCMA"


def _reinvite(p: Pair, sdp_edit) -> Response:
    """Send B's re-INVITE built by hand from A's dialog view (a re-INVITE as Asterisk sends)."""
    call = p.b.call
    assert call is not None and call.dialog is not None
    req = call.dialog.create_request("INVITE")
    req.headers.add("Via", f"SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bKreinv{req.cseq.number}")
    req.headers.add("Contact", "<sip:b@127.0.0.2:5080>")
    req.headers.add("Content-Type", "application/sdp")
    req.body = sdp_edit(call.last_sdp.decode()).encode()
    p.a.receive_datagram(req.to_bytes(), ("127.0.0.2", 5080), p.now)
    out = p.a.datagrams_to_send()
    resp = parse_message(out[0][0])
    assert isinstance(resp, Response)
    return resp


def test_reinvite_moves_media_and_holds() -> None:
    p = Pair()
    ring(p)
    p.b.answer(media(5000), p.now)
    p.pump()
    first = _reinvite(p, lambda s: s).body
    assert first.split(b"\r\n")[1].endswith(b" 1 2 IN IP4 127.0.0.1"), "answer differs: v+1"
    p.a.next_event()
    assert _reinvite(p, lambda s: s).body == first, "an unchanged answer keeps its o= version"
    p.a.next_event()
    resp = _reinvite(p, lambda s: s.replace("m=audio 5000", "m=audio 6000")
                     .replace("c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.9"))
    assert resp.status == 200 and b"m=audio 4000" in resp.body
    upd = p.a.next_event()
    assert isinstance(upd, MediaUpdated)
    assert (upd.media.remote_addr, upd.media.remote_port) == ("127.0.0.9", 6000)
    resp = _reinvite(p, lambda s: s.replace("a=sendrecv", "a=sendonly"))
    assert b"a=recvonly" in resp.body
    assert p.a.next_event().media.direction == "recvonly"
    resp = _reinvite(p, lambda s: s.replace("a=sendrecv", "a=inactive"))
    assert b"a=inactive" in resp.body
    origin_versions = [int(line.split()[2]) for line in resp.body.decode().splitlines()
                       if line.startswith("o=")]
    assert origin_versions[0] > 1, "o= version increases when our SDP changes"


def test_reinvite_with_old_cseq_gets_500() -> None:
    p = Pair()
    ring(p)
    p.b.answer(media(5000), p.now)
    p.pump()
    call = p.b.call
    assert call is not None and call.dialog is not None
    call.dialog.local_cseq = 10
    assert _reinvite(p, lambda s: s).status == 200
    p.a.receive_datagram(b"ACK", ("127.0.0.2", 5080), p.now)
    call.dialog.local_cseq = 5
    resp = _reinvite(p, lambda s: s)
    assert resp.status == 500


def test_info_dtmf_and_options_in_dialog() -> None:
    p = Pair()
    ring(p)
    p.b.answer(media(5000), p.now)
    p.pump()
    call = p.b.call
    assert call is not None and call.dialog is not None
    for method, ctype, body in (("INFO", "application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"),
                                ("OPTIONS", None, "")):
        req = call.dialog.create_request(method)
        req.headers.add("Via", f"SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bK{method}")
        if ctype:
            req.headers.add("Content-Type", ctype)
        req.body = body.encode()
        p.a.receive_datagram(req.to_bytes(), ("127.0.0.2", 5080), p.now)
        resp = parse_message(p.a.datagrams_to_send()[0][0])
        assert isinstance(resp, Response) and resp.status == 200
    assert p.a.next_event() == DtmfReceived(call.call_id, "5")


def _out_of_dialog(method: str, to_tag: str = "") -> Request:
    req = Request(method=method, uri="sip:a@127.0.0.1:5070")
    req.headers.add("Via", "SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bKood" + method)
    req.headers.add("From", "<sip:b@127.0.0.2>;tag=x1")
    req.headers.add("To", "<sip:a@127.0.0.1>" + (f";tag={to_tag}" if to_tag else ""))
    req.headers.add("Call-ID", "ood-" + method)
    req.headers.add("CSeq", f"1 {method}")
    req.headers.add("Max-Forwards", "70")
    return req


def test_answers_outside_calls() -> None:
    p = Pair()
    expected = {"OPTIONS": 200, "BYE": 481, "SUBSCRIBE": 405, "MESSAGE": 405, "FOO": 501,
                "REGISTER": 405}
    for method, status in expected.items():
        p.a.receive_datagram(_out_of_dialog(method).to_bytes(), ("127.0.0.2", 5080), p.now)
        resp = parse_message(p.a.datagrams_to_send()[0][0])
        assert isinstance(resp, Response)
        assert resp.status == status, method
        if status in (405, 501):
            assert "INVITE" in (resp.headers.get("Allow") or "")
    p.a.receive_datagram(_out_of_dialog("BYE", "nosuch").to_bytes(), ("127.0.0.2", 5080), p.now)
    assert parse_message(p.a.datagrams_to_send()[0][0]).status == 481
    p.a.receive_datagram(_out_of_dialog("CANCEL").to_bytes(), ("127.0.0.2", 5080), p.now)
    assert parse_message(p.a.datagrams_to_send()[0][0]).status == 481


def test_responses_go_to_received_and_rport() -> None:
    p = Pair()
    req = _out_of_dialog("OPTIONS")
    req.headers.set("Via", "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKnat")
    p.a.receive_datagram(req.to_bytes(), ("127.0.0.2", 40000), p.now)
    data, addr = p.a.datagrams_to_send()[0]
    assert addr == ("127.0.0.2", 40000)
    via = parse_message(data).top_via
    assert via.params["received"] == "127.0.0.2" and via.params["rport"] == "40000"


def _late_offer(p: Pair, local: LocalMedia, ack_body: bytes) -> Request:
    """An INVITE without SDP, answered with our offer in the 200; the ACK carries ack_body."""
    req = _out_of_dialog("INVITE")
    req.headers.add("Contact", "<sip:b@127.0.0.2:5080>")
    p.a.receive_datagram(req.to_bytes(), ("127.0.0.2", 5080), p.now)
    p.a.datagrams_to_send()
    assert isinstance(p.a.next_event(), IncomingCall)
    p.a.answer(local, p.now)
    ok = parse_message(p.a.datagrams_to_send()[0][0])
    assert ok.status == 200 and b"m=audio 4000" in ok.body
    assert isinstance(p.a.next_event(), CallAnswered)
    ack = Request(method="ACK", uri="sip:a@127.0.0.1:5070")
    for name in ("From", "Call-ID"):
        ack.headers.add(name, req.headers.get(name) or "")
    ack.headers.add("To", ok.headers.get("To") or "")
    ack.headers.add("Via", "SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bKack1")
    ack.headers.add("CSeq", "1 ACK")
    if ack_body:
        ack.headers.add("Content-Type", "application/sdp")
        ack.body = ack_body
    p.a.receive_datagram(ack.to_bytes(), ("127.0.0.2", 5080), p.now)
    return req


PLAIN_ANSWER = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
                b"m=audio 7000 RTP/AVP 8\r\n")


def test_late_offer_invite() -> None:
    p = Pair()
    _late_offer(p, media(4000), PLAIN_ANSWER)
    upd = p.a.next_event()
    assert isinstance(upd, MediaUpdated) and upd.media.remote_port == 7000
    assert upd.media.codec == "PCMA"


@pytest.mark.parametrize(("local", "body", "why"), [
    (LocalMedia("127.0.0.1", 4000, srtp="required"), PLAIN_ANSWER, "a=crypto"),
    (None, b"", "no SDP answer"),
    (None, PLAIN_ANSWER.replace(b"RTP/AVP 8", b"RTP/AVP 18"), "codec")])
def test_late_offer_without_a_usable_answer_in_the_ack_is_ended(local, body, why) -> None:
    """Under media.srtp: required (or with no answer at all) a late-offer call must not stand
    without media: the box sends BYE and reports why."""
    p = Pair()
    _late_offer(p, local or media(4000), body)
    end = p.a.next_event()
    assert isinstance(end, CallEnded) and not end.by_remote, end
    assert end.reason.startswith("unusable SDP answer in ACK") and why in end.reason, end.reason
    sent = [parse_message(d) for d, _ in p.a.datagrams_to_send()]
    assert [m.method for m in sent if isinstance(m, Request)] == ["BYE"]
    assert p.a.counters["bad_sdp_in_ack"] == 1


def test_ringing_event_once_for_180_and_183() -> None:
    p = Pair()
    ring(p)
    assert [e for e in p.events["a"] if isinstance(e, CallRinging)] == [
        CallRinging(p.a.call.call_id, 180)]
