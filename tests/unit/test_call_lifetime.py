"""Every call ends (issue #23): each way a call could stay up, on the virtual clock of the pair
harness. B plays the box; A plays the PBX, its datagrams rewritten in flight where a PBX sends
what our own user agent would not (Session-Expires offers, CSeq far ahead, a lost peer)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from devtools.box.fakes import PBX_ADDR, FakeBox, run
from firmware.config import parse_config
from firmware.events import CallEnded, IncomingCall, MediaUpdated
from firmware.sip.call import CallState
from firmware.sip.errors import RemoteProtocolError
from firmware.sip.message import Request, Response, parse_message
from firmware.sip.sdp import LocalMedia
from firmware.sip.session_timer import (
    IntervalTooSmallError,
    SessionTimer,
    parse_session_expires,
    uas_negotiate,
)

from .pair import A_ADDR, Pair, media

B_URI = "sip:b@127.0.0.2:5080"


def parsed(data: bytes) -> Request | Response:
    return parse_message(data)


def inject(p: Pair, direction: str, start: bytes, edit: Callable[[bytes], bytes]) -> None:
    """Rewrite ``direction`` datagrams starting with ``start`` on the wire (``edit`` may return
    b"" to lose one)."""
    dst, src_addr = (p.b, A_ADDR) if direction == "a>b" else (p.a, ("127.0.0.2", 5080))

    def drop(d: str, data: bytes) -> bool:
        if d != direction or not data.startswith(start):
            return False
        if new := edit(data):
            dst.receive_datagram(new, src_addr, p.now)
        return True

    p.drop = drop


def add_headers(*lines: str) -> Callable[[bytes], bytes]:
    """Insert header lines after the start line, unless a Session-Expires is there already
    (a re-sent INVITE after 422 carries its own)."""
    def edit(data: bytes) -> bytes:
        if b"\r\nSession-Expires:" in data:
            return data
        head, _, rest = data.partition(b"\r\n")
        return head + b"\r\n" + "".join(f"{line}\r\n" for line in lines).encode() + rest
    return edit


def established(*offer: str) -> Pair:
    """A (the PBX) calls B (the box) with ``offer`` headers in its INVITE; B answers."""
    p = Pair()
    inject(p, "a>b", b"INVITE ", add_headers(*offer))
    p.a.make_call(B_URI, media(4000), p.now)
    p.pump()
    p.drop = lambda d, data: False
    assert p.b.call is not None and p.b.call.state is CallState.RINGING
    p.b.answer(media(5000), p.now)
    p.pump()
    assert p.a.call is not None and p.a.call.state is CallState.CONFIRMED
    assert p.b.call.state is CallState.CONFIRMED
    return p


def box_200(p: Pair) -> Response:
    oks = [parsed(d) for dr, d in p.wire if dr == "b>a" and d.startswith(b"SIP/2.0 200")
           and b" INVITE\r\n" in d]
    resp = oks[0]
    assert isinstance(resp, Response)
    return resp


def ended(p: Pair, side: str) -> list[CallEnded]:
    return [e for e in p.events[side] if isinstance(e, CallEnded)]


# ----------------------------------------------------------------------------- CSeq
def in_dialog_from_a(p: Pair, method: str, cseq: int) -> None:
    """A request of A's dialog with a chosen CSeq, straight to B (a new transaction)."""
    assert p.a.call is not None and p.a.call.dialog is not None
    req = p.a.call.dialog.create_request(method, cseq=cseq)
    req.headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKodd{len(p.wire)}")
    p.b.receive_datagram(req.to_bytes(), A_ADDR, p.now)


def test_a_cseq_far_ahead_does_not_stop_the_peer_ending_the_call() -> None:
    p = established()
    in_dialog_from_a(p, "OPTIONS", 2_000_000_000)  # one forged request, CSeq far ahead
    p.pump()
    assert p.sent("b>a", b"SIP/2.0 200 OK")[-1].count(b"2000000000 OPTIONS") == 1
    assert p.b.counters["cseq_jumps"] == 1
    p.a.hangup(p.now)  # the PBX's BYE carries its own, normal CSeq
    p.pump()
    assert b" BYE\r\n" in p.sent("b>a", b"SIP/2.0 200 OK")[-1], "the BYE is answered 200"
    assert p.b.call.state is CallState.ENDED and not p.b.in_call
    assert ended(p, "b") == [CallEnded(p.b.call.call_id, "remote hangup", None, True)]
    assert p.b.counters["bye_cseq_lower"] == 1
    p.a.make_call(B_URI, media(4002), p.now)  # and the next call rings, not 486
    p.pump()
    assert [type(e) for e in p.events["b"]].count(IncomingCall) == 2
    assert p.b.call.state is CallState.RINGING


@pytest.mark.parametrize("gap", [0, 3])
def test_a_bye_with_a_lower_or_equal_cseq_ends_the_call_other_requests_get_500(gap: int
                                                                              ) -> None:
    p = established()
    dialog = p.a.call.dialog
    dialog.local_cseq = 10
    in_dialog_from_a(p, "INFO", 10)
    p.pump()
    in_dialog_from_a(p, "INFO", 10 - gap)  # not above the last: 500, the call goes on
    p.pump()
    assert p.sent("b>a", b"SIP/2.0 500")
    assert p.b.counters["cseq_refused"] == 1 and p.b.call.state is CallState.CONFIRMED
    in_dialog_from_a(p, "BYE", 10 - gap)
    p.pump()
    assert b" BYE\r\n" in p.sent("b>a", b"SIP/2.0 200 OK")[-1]
    assert p.b.call.state is CallState.ENDED and ended(p, "b")[0].reason == "remote hangup"


def test_bye_on_the_early_dialog_ends_the_ringing_call_and_its_invite() -> None:
    p = Pair()
    p.a.make_call(B_URI, media(4000), p.now)
    p.pump()
    call = p.b.call
    assert call is not None and call.state is CallState.RINGING
    bye = Request(method="BYE", uri="sip:b@127.0.0.2:5080")
    bye.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKearlybye")
    for name in ("From", "Call-ID"):
        bye.headers.add(name, call.invite.headers.get(name) or "")
    bye.headers.add("To", f"{call.invite.headers.get('To')};tag={call.local_tag}")
    bye.headers.add("CSeq", "2 BYE")
    p.b.receive_datagram(bye.to_bytes(), A_ADDR, p.now)
    p.pump()
    assert call.state is CallState.ENDED
    assert p.sent("b>a", b"SIP/2.0 487"), "the INVITE is answered 487 (RFC 3261 §15.1.2)"
    p.advance(40)
    assert p.b.open_transactions == 0


# ----------------------------------------------------------------------------- session timers
def test_box_as_refresher_refreshes_at_half_the_interval_with_the_same_sdp() -> None:
    p = established("Supported: timer", "Session-Expires: 90;refresher=uas", "Min-SE: 90")
    ok = box_200(p)
    assert ok.headers.get("Session-Expires") == "90;refresher=uas"
    assert "timer" in ok.headers.get_all("Require") and "timer" in ok.headers.get_all("Supported")
    call = p.b.call
    assert call.timer == SessionTimer(90, True, 0.0) and call.next_deadline() == 45.0
    answered_sdp = call.last_sdp
    p.advance(44.9)
    assert not p.sent("b>a", b"INVITE ")
    p.advance(0.2)
    (reinvite,) = [parsed(d) for d in p.sent("b>a", b"INVITE ")]
    assert isinstance(reinvite, Request)
    assert reinvite.headers.get("Session-Expires") == "90;refresher=uac"
    assert reinvite.headers.get("Min-SE") == "90" and reinvite.headers.get("Contact")
    assert "timer" in reinvite.headers.get_all("Supported")
    assert reinvite.body == answered_sdp, "same SDP, same o= version: nothing changed"
    assert reinvite.cseq.number == 1 and reinvite.to.tag == p.a.call.local_tag
    assert p.sent("b>a", b"ACK "), "the 2xx to the refresh is acknowledged"
    assert call.timer == SessionTimer(90, True, 45.0), "the interval restarts"
    assert not [e for e in p.events["b"] if isinstance(e, MediaUpdated)], "media unchanged"
    p.advance(45 * 6)
    assert len(p.sent("b>a", b"INVITE ")) == 7 and call.state is CallState.CONFIRMED
    assert p.a.call.state is CallState.CONFIRMED and p.b.counters["session_refreshes"] == 7


def test_peer_as_refresher_that_never_refreshes_gets_a_bye() -> None:
    p = established("Supported: timer", "Session-Expires: 90;refresher=uac")
    assert box_200(p).headers.get("Session-Expires") == "90;refresher=uac"
    assert p.b.call.timer == SessionTimer(90, False, 0.0)
    assert p.b.call.next_deadline() == 60.0, "expiry - min(32, SE/3)"
    p.drop = lambda d, data: d == "a>b" and data.startswith(b"INVITE ")  # no refresh arrives
    p.advance(59.9)
    assert p.b.call.state is CallState.CONFIRMED and not p.sent("b>a", b"BYE ")
    p.advance(0.2)
    assert p.sent("b>a", b"BYE ") and p.b.call.state is CallState.ENDED
    assert ended(p, "b") == [CallEnded(p.b.call.call_id, "session expired (not refreshed)",
                                       None, False)]
    assert p.b.counters["session_expired"] == 1


def test_peer_refreshes_keep_the_call_up_and_restart_the_interval() -> None:
    p = established("Supported: timer", "Session-Expires: 90;refresher=uac")
    assert p.a.call.timer == SessionTimer(90, True, 0.0), "the PBX side refreshes"
    p.advance(600)
    refreshes = p.sent("a>b", b"INVITE ")[1:]
    assert len(refreshes) == 600 // 45 and p.b.call.state is CallState.CONFIRMED
    assert all(b"SIP/2.0 200 OK" in d for d in p.sent("b>a", b"SIP/2.0 200 OK"))
    assert p.b.call.timer is not None and p.b.call.timer.refreshed_at == 585.0
    assert not p.sent("b>a", b"BYE ")


@pytest.mark.parametrize("failure", ["481", "timeout"])
def test_a_failed_refresh_ends_the_call_with_a_bye(failure: str) -> None:
    # 1800 s: a refresh at 900 s that times out (Timer B, 32 s) fails before the expiry would
    p = established("Supported: timer", "Session-Expires: 1800;refresher=uas")
    if failure == "481":  # the PBX lost the call without a BYE reaching the box
        p.drop = lambda d, data: d == "a>b" and data.startswith(b"BYE ")
        p.a.hangup(p.now)
        p.pump()
    else:  # the PBX vanished
        p.drop = lambda d, data: d == "a>b"
    p.advance(899.9)
    assert p.b.call.state is CallState.CONFIRMED and not p.sent("b>a", b"INVITE ")
    p.advance(0.2)
    assert p.sent("b>a", b"INVITE ")
    p.advance(1 if failure == "481" else 31.0)
    if failure == "timeout":
        assert p.b.call.state is CallState.CONFIRMED, "Timer B: 64*T1 = 32 s"
        p.advance(1.0)
    assert p.b.call.state is CallState.ENDED and p.sent("b>a", b"BYE ")
    why = "481 Call/Transaction Does Not Exist" if failure == "481" else "timeout"
    assert ended(p, "b")[-1].reason == f"session refresh failed ({why})"


def test_no_timer_offered_no_timer_run() -> None:
    p = established()  # our own INVITE: Supported: timer, no Session-Expires
    ok = box_200(p)
    assert ok.headers.get("Session-Expires") is None and ok.headers.get("Require") is None
    assert p.b.call.timer is None and p.a.call.timer is None
    assert p.b.call.next_deadline() is None
    p.advance(7200)
    assert p.b.call.state is CallState.CONFIRMED and len(p.sent("b>a", b"INVITE ")) == 0
    assert len(p.sent("a>b", b"INVITE ")) == 1


def test_peer_without_timer_support_but_a_proxy_inserted_interval_makes_the_box_refresh(
) -> None:
    p = Pair()
    inject(p, "a>b", b"INVITE ", lambda d: add_headers("Session-Expires: 30")(
        d.replace(b"Supported: timer\r\n", b"")))
    p.a.make_call(B_URI, media(4000), p.now)
    p.pump()
    p.drop = lambda d, data: False
    p.b.answer(media(5000), p.now)
    p.pump()
    ok = box_200(p)
    assert ok.headers.get("Session-Expires") == "90;refresher=uas", "raised to Min-SE 90"
    assert ok.headers.get("Require") is None, "the caller does not know the extension"
    assert p.b.call.timer == SessionTimer(90, True, 0.0)


def test_interval_below_min_se_gets_422_and_the_caller_retries_with_min_se() -> None:
    p = Pair()
    inject(p, "a>b", b"INVITE ", add_headers("Session-Expires: 60"))
    p.a.make_call(B_URI, media(4000), p.now)
    p.pump()
    (too_small,) = [parsed(d) for d in p.sent("b>a", b"SIP/2.0 422")]
    assert too_small.headers.get("Min-SE") == "90" and too_small.reason == \
        "Session Interval Too Small"
    retry = parsed(p.sent("a>b", b"INVITE ")[-1])
    assert retry.headers.get("Session-Expires") == "90" and retry.cseq.number == 2
    incoming = [e for e in p.events["b"] if isinstance(e, IncomingCall)]
    assert len(incoming) == 1, "the 422 rang nothing; the retry rings once"
    assert not ended(p, "b") and p.b.counters["session_interval_too_small"] == 1
    p.b.answer(media(5000), p.now)
    p.pump()
    assert p.b.call.timer == SessionTimer(90, False, 0.0)


def test_require_timer_is_understood_not_refused_420() -> None:
    p = established("Require: timer", "Session-Expires: 1800;refresher=uac")
    assert not p.sent("b>a", b"SIP/2.0 420")
    assert box_200(p).headers.get("Session-Expires") == "1800;refresher=uac"


def test_malformed_session_expires_is_refused_before_ringing() -> None:
    p = Pair()
    inject(p, "a>b", b"INVITE ", add_headers("Session-Expires: soon;refresher=uac"))
    p.a.make_call(B_URI, media(4000), p.now)
    p.pump()
    assert p.sent("b>a", b"SIP/2.0 400") and not p.events["b"] and not p.b.in_call


def test_a_reinvite_without_session_expires_cannot_switch_the_timer_off() -> None:
    p = established("Supported: timer", "Session-Expires: 90;refresher=uac")
    call = p.b.call
    dialog = p.a.call.dialog
    req = dialog.create_request("INVITE")
    req.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnose")
    req.headers.add("Contact", "<sip:a@127.0.0.1:5070>")
    req.headers.add("Content-Type", "application/sdp")
    req.body = p.a.call.last_sdp
    p.advance(10)
    p.b.receive_datagram(req.to_bytes(), A_ADDR, p.now)
    ok = parsed(p.b.datagrams_to_send()[0][0])
    assert ok.status == 200 and ok.headers.get("Session-Expires") == "90;refresher=uas"
    assert call.timer == SessionTimer(90, True, 10.0), "the box now refreshes"


def test_uas_negotiation_table() -> None:
    def req(*lines: str) -> Request:
        r = Request(method="INVITE", uri="sip:b@127.0.0.2")
        for line in lines:
            name, _, value = line.partition(": ")
            r.headers.add(name, value)
        return r

    assert uas_negotiate(req("Supported: timer"), 90, 0, None) == (None, [])
    timer, headers = uas_negotiate(req("Supported: timer", "Session-Expires: 1800"), 90, 5, None)
    assert timer == SessionTimer(1800, False, 5) and headers == [
        ("Session-Expires", "1800;refresher=uac"), ("Require", "timer")]
    with pytest.raises(IntervalTooSmallError) as too_small:
        uas_negotiate(req("Supported: timer", "Session-Expires: 200", "Min-SE: 300"), 90, 0,
                      None)
    assert too_small.value.status == 422 and too_small.value.min_se == 300
    assert parse_session_expires("1800 ; Refresher=UAS") == (1800, "uas")
    for bad in ("", "0", "-5", "1e3", "99999999999", "90;refresher=me", "90;;"):
        with pytest.raises(RemoteProtocolError) as exc:
            parse_session_expires(bad)
        assert exc.value.status == 400, bad


# ----------------------------------------------------------------------------- max duration
def test_default_max_duration_hangs_a_door_call_up_after_ten_minutes() -> None:
    box = FakeBox()  # the test config sets no calls.max_duration: the built-in default holds
    assert parse_config("sip: {server: pbx, username: '5002'}").calls.max_duration == 600

    async def scenario() -> None:
        await box.app.start()
        box.pbx.make_call("sip:5002@127.0.0.1:5070", LocalMedia(PBX_ADDR[0], 30010),
                          box.clock.now)
        box.pump()
        await box.controls.command(cmd="answer")
        box.pump()
        assert box.app.state == "in_call"
        packets = itertools.count()  # RTP keeps arriving: no media timeout, only the duration
        box.media.sessions[0].stats = lambda: {"ticks": 1, "received": next(packets)}
        box.advance(599.0)
        assert box.app.state == "in_call", box.app.last_call_end and not any("BYE" in line
                                                      for line in box.sent_lines())
        box.advance(2.0)
        assert box.sent_lines()[-1].startswith("BYE sip:"), "the box hangs up by itself"
        assert box.app.state == "idle" and box.app.last_call_end == "local hangup"
        assert any(isinstance(e, CallEnded) for e in box.pbx_events)
        await box.app.stop()

    run(scenario())


def test_a_refresh_answered_without_session_expires_keeps_the_box_refreshing() -> None:
    p = established("Supported: timer", "Session-Expires: 90;refresher=uas")

    def strip(data: bytes) -> bytes:  # the PBX's 2xx to the refresh names no timer
        if b" INVITE\r\n" in data and b"CSeq: 1 INVITE" in data:
            data = b"\r\n".join(line for line in data.split(b"\r\n")
                                if not line.startswith((b"Session-Expires", b"Require")))
        return data

    inject(p, "a>b", b"SIP/2.0 200", strip)
    p.advance(46)
    assert p.sent("b>a", b"INVITE ") and p.b.call.timer == SessionTimer(90, True, 45.0)
    p.advance(45)
    assert len(p.sent("b>a", b"INVITE ")) == 2, "a timer once agreed is not dropped"
