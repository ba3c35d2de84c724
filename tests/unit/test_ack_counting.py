"""The ACK of a refused or cancelled incoming call (RFC 3261 §17.2.1: it belongs to the INVITE
server transaction) is the end of that exchange, not a retransmission: the status counter
``retransmissions_received`` must stay a sign of loss on the path, as the soak benchmark
(benchmarks/soak.py) reads it. Two real user agents (``pair.Pair``) on a virtual clock."""

from __future__ import annotations

from .pair import A_ADDR, Pair, media

B_URI = "sip:b@127.0.0.2:5080"


def _ringing() -> Pair:
    p = Pair()
    p.a.make_call(B_URI, media(4000), p.now)
    p.pump()
    assert p.b.call is not None and p.b.call.state == "ringing"
    return p


def test_the_ack_of_a_refusal_is_no_retransmission() -> None:
    p = _ringing()
    p.b.reject(486, p.now)
    p.pump()
    assert p.sent("a>b", b"ACK "), "the 486 was acknowledged"
    assert p.b.counters["retransmissions_received"] == 0


def test_the_ack_of_a_cancelled_invite_is_no_retransmission() -> None:
    p = _ringing()
    p.a.hangup(p.now)
    p.pump()
    assert p.sent("a>b", b"CANCEL ") and p.sent("a>b", b"ACK ")
    assert p.b.counters["retransmissions_received"] == 0


def test_a_retransmitted_invite_still_counts() -> None:
    p = _ringing()
    invite = p.sent("a>b", b"INVITE ")[0]
    p.b.receive_datagram(invite, A_ADDR, p.now)
    assert p.b.counters["retransmissions_received"] == 1
