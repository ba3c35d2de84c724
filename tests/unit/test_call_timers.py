"""The call (``sip/call.py``) on a virtual clock between two user agents (the pair harness):
its own deadlines (ring timeout, CANCEL guard), INVITE retransmission and Timer B, 2xx
retransmission until the ACK and the session end without one, BYE retransmission and Timer F."""

from __future__ import annotations

from firmware.events import CallEnded
from firmware.sip.call import CallState

from .pair import Pair, media

B_URI = "sip:b@127.0.0.2:5080"


def timed(p: Pair, direction: str, start: bytes) -> list[float]:
    """Install a drop predicate that drops ``direction`` datagrams starting with ``start`` and
    returns the list the virtual send times of those get appended to."""
    times: list[float] = []

    def drop(d: str, data: bytes) -> bool:
        if d == direction and data.startswith(start):
            times.append(p.now)
            return True
        return False

    p.drop = drop
    return times


def test_invite_retransmits_on_timer_a_until_timer_b_ends_the_call() -> None:
    p = Pair(a_cfg={"ring_timeout": 60.0})
    sent = timed(p, "a>b", b"INVITE")
    call_id = p.a.make_call(B_URI, media(4000), p.now)
    assert p.a.call is not None and p.a.call.next_deadline() == 60.0, "the ring timeout"
    p.advance(31.9)
    assert sent == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5], "Timer A doubles, no T2 cap"
    assert p.a.call.state is CallState.CALLING
    p.advance(0.2)
    assert p.events["a"] == [CallEnded(call_id, "no response to INVITE (timeout)", 408, True)]
    assert p.a.call.state is CallState.ENDED and p.a.call.next_deadline() is None
    assert p.a.open_transactions == 0


def test_ring_timeout_is_the_calls_own_deadline() -> None:
    p = Pair(b_cfg={"ring_timeout": 20.0})
    p.a.make_call(B_URI, media(4000), p.now)
    p.pump()
    call = p.b.call
    assert call is not None and call.state is CallState.RINGING
    assert call.next_deadline() == 20.0
    call.handle_timer(19.99)
    assert p.b.datagrams_to_send() == [] and call.state is CallState.RINGING
    call.handle_timer(20.0)
    (data, _), = p.b.datagrams_to_send()
    assert data.startswith(b"SIP/2.0 480 "), "an unanswered call is declined with 480"
    assert call.state is CallState.ENDED and call.next_deadline() is None
    assert p.b.next_event() == CallEnded(call.call_id, "not answered", 480, False)


def test_cancel_guard_ends_a_call_whose_cancel_gets_no_final_response() -> None:
    p = Pair(a_cfg={"ring_timeout": 120.0})
    p.a.make_call(B_URI, media(4000), p.now)
    p.pump()  # 100/180 reached A: CANCEL is allowed now
    assert p.a.call is not None and p.a.call.state is CallState.RINGING
    p.drop = lambda d, data: d == "b>a"  # B (or the path back) falls silent
    p.advance(1.0)
    p.a.hangup(p.now)
    assert p.a.call.next_deadline() == 1.0 + 32.0, "64*T1 after the hang-up"
    p.advance(31.9)
    assert p.a.call.state is CallState.RINGING and p.sent("a>b", b"CANCEL")
    p.advance(0.2)
    assert p.a.call.state is CallState.ENDED
    assert p.events["a"][-1] == CallEnded(p.a.call.call_id, "cancelled (no final response)",
                                          None, False)


def test_200_retransmitted_until_ack_then_session_ends_without_one() -> None:
    p = Pair()
    p.a.make_call(B_URI, media(4000), p.now)
    p.pump()
    acks = timed(p, "a>b", b"ACK")
    oks: list[float] = []
    inner = p.drop

    def drop(d: str, data: bytes) -> bool:
        if d == "b>a" and data.startswith(b"SIP/2.0 200") and b"INVITE" in data:
            oks.append(p.now)
        return inner(d, data)

    p.drop = drop
    p.b.answer(media(5000), p.now)
    p.advance(31.9)
    assert oks == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5], \
        "Timer G doubles up to T2"
    assert len(acks) == len(oks), "A acknowledges every 200 (the ACKs are lost)"
    assert p.b.call is not None and p.b.call.state is CallState.CONFIRMED
    p.advance(0.2)
    assert p.b.call.state is CallState.ENDED
    assert p.events["b"][-1] == CallEnded(p.b.call.call_id, "no ACK from caller", None, True)
    assert p.sent("b>a", b"BYE"), "the callee ends the session it cannot confirm"
    assert p.a.call is not None and p.a.call.state is CallState.ENDED, "the caller got the BYE"


def test_bye_retransmits_until_timer_f_and_the_call_ends_at_once() -> None:
    p = Pair()
    p.a.make_call(B_URI, media(4000), p.now)
    p.pump()
    p.b.answer(media(5000), p.now)
    p.pump()
    assert p.a.call is not None and p.a.call.state is CallState.CONFIRMED
    byes = timed(p, "a>b", b"BYE")
    start = p.now
    p.a.hangup(p.now)
    assert p.a.call.state is CallState.ENDED, "locally a hang-up ends the call at once"
    assert p.a.next_event() == CallEnded(p.a.call.call_id, "local hangup", None, False)
    p.advance(40)
    assert [t - start for t in byes] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5,
                                         27.5, 31.5]
    assert p.a.open_transactions == 0 and p.a.get_timer() is None, "Timer F reaped it"
