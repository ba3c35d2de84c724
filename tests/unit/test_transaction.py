"""Transaction state machines and timers (RFC 3261 §17) under a virtual clock."""

from __future__ import annotations

from firmware.sip.message import Request, Response
from firmware.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    State,
    Timer,
    TimerConfig,
    server_key,
)

T = TimerConfig(t1=0.5, t2=4.0, t4=5.0)
DEST = ("127.0.0.1", 5060)


def request(method: str = "OPTIONS", branch: str = "z9hG4bKabc") -> Request:
    req = Request(method=method, uri="sip:x@y")
    req.headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch}")
    req.headers.add("From", "<sip:a@b>;tag=1")
    req.headers.add("To", "<sip:x@y>")
    req.headers.add("Call-ID", "c1")
    req.headers.add("CSeq", f"1 {method}")
    return req


def response(req: Request, status: int) -> Response:
    resp = Response(status=status, reason="X")
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        resp.headers.add(name, req.headers.get(name) or "")
    return resp


class Clock:
    def __init__(self, tx) -> None:
        self.tx = tx
        self.now = 0.0

    def run_until(self, t: float) -> None:
        while (d := self.tx.next_deadline()) is not None and d <= t:
            self.now = d
            self.tx.handle_timer(d)
        self.now = t


def client(method: str, reliable: bool = False):
    sent: list[tuple[float, str]] = []
    got: list[int] = []
    timeouts: list[float] = []
    clock_box: list[Clock] = []
    tx = ClientTransaction(request(method), DEST, T, reliable,
                           lambda m, a: sent.append((clock_box[0].now if clock_box else 0.0,
                                                     m.to_bytes().split(b" ")[0].decode())),
                           lambda r, t, now: got.append(r.status),
                           lambda t, now: timeouts.append(now), 0.0)
    clock = Clock(tx)
    clock_box.append(clock)
    return tx, clock, sent, got, timeouts


def test_non_invite_retransmits_with_timer_e_until_f() -> None:
    tx, clock, sent, _, timeouts = client("OPTIONS")
    clock.run_until(40)
    times = [t for t, _ in sent]
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert timeouts == [32.0] and tx.terminated


def test_non_invite_proceeding_uses_t2_and_completes_with_k() -> None:
    tx, clock, sent, got, _ = client("OPTIONS")
    tx.receive(response(tx.request, 100), 0.1)
    clock.run_until(9)
    assert [t for t, _ in sent] == [0.0, 0.5, 4.5, 8.5]
    tx.receive(response(tx.request, 200), 9.0)
    tx.receive(response(tx.request, 200), 9.1)  # retransmission absorbed
    assert got == [100, 200] and tx.state is State.COMPLETED
    clock.run_until(13.9)
    assert not tx.terminated
    clock.run_until(14.1)
    assert tx.terminated, "Timer K = T4"


def test_reliable_transport_never_retransmits() -> None:
    tx, clock, sent, _, timeouts = client("OPTIONS", reliable=True)
    clock.run_until(40)
    assert len(sent) == 1 and timeouts == [32.0]
    itx, iclock, isent, _, _ = client("INVITE", reliable=True)
    itx.receive(response(itx.request, 486), 1.0)
    assert itx.terminated is False
    iclock.run_until(1.0)
    assert itx.terminated, "Timer D = 0 on reliable transports"
    assert [m for _, m in isent] == ["INVITE", "ACK"]


def test_invite_timer_a_doubles_and_b_fires() -> None:
    tx, clock, sent, _, timeouts = client("INVITE")
    clock.run_until(40)
    assert [t for t, _ in sent] == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert timeouts == [32.0]


def test_invite_non_2xx_is_acked_and_absorbed_during_d() -> None:
    tx, clock, sent, got, _ = client("INVITE")
    tx.receive(response(tx.request, 180), 0.2)
    clock.run_until(5)
    assert [m for _, m in sent] == ["INVITE"], "no retransmission after a provisional"
    tx.receive(response(tx.request, 486), 5.0)
    tx.receive(response(tx.request, 486), 5.5)
    assert [m for _, m in sent] == ["INVITE", "ACK", "ACK"]
    assert got == [180, 486]
    clock.run_until(36.9)
    assert not tx.terminated
    clock.run_until(37.1)
    assert tx.terminated, "Timer D = 32 s"


def test_invite_2xx_retransmissions_reach_the_tu_in_accepted() -> None:
    tx, clock, _, got, _ = client("INVITE")
    tx.receive(response(tx.request, 200), 1.0)
    tx.receive(response(tx.request, 200), 1.5)
    assert got == [200, 200] and tx.state is State.ACCEPTED
    clock.run_until(33.1)
    assert tx.terminated, "Timer M = 64*T1"


def server(method: str, reliable: bool = False):
    sent: list[tuple[float, int]] = []
    timeouts: list[str] = []
    box: list[Clock] = []
    tx = ServerTransaction(request(method), DEST, T, reliable,
                           lambda m, a: sent.append((box[0].now, m.status)),
                           lambda t, why, now: timeouts.append(why))
    clock = Clock(tx)
    box.append(clock)
    return tx, clock, sent, timeouts


def test_invite_server_g_and_h() -> None:
    tx, clock, sent, timeouts = server("INVITE")
    tx.respond(response(tx.request, 180), 0.0)
    tx.receive_retransmission(tx.request, 0.3)
    tx.respond(response(tx.request, 486), 1.0)
    clock.run_until(40)
    assert sent[:2] == [(0.0, 180), (0.0, 180)], "retransmitted INVITE gets the last 1xx"
    assert [t for t, s in sent[2:]] == [0.0, 1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5,
                                        28.5, 32.5]
    assert timeouts == ["no ACK for final response"]


def test_invite_server_ack_stops_g_then_i() -> None:
    tx, clock, sent, timeouts = server("INVITE")
    tx.respond(response(tx.request, 603), 0.0)
    clock.run_until(0.6)
    ack = request("ACK")
    assert server_key(ack) == tx.key, "ACK of a non-2xx matches the INVITE transaction"
    tx.receive_retransmission(ack, 0.6)
    assert tx.state is State.CONFIRMED
    clock.run_until(20)
    assert len(sent) == 2 and tx.terminated and timeouts == []


def test_invite_server_2xx_retransmits_until_ack() -> None:
    tx, clock, sent, timeouts = server("INVITE")
    tx.respond(response(tx.request, 200), 0.0)
    clock.run_until(2.0)
    assert [s for _, s in sent] == [200, 200, 200]
    tx.ack_2xx(2.0)
    clock.run_until(40)
    assert len(sent) == 3 and tx.terminated and timeouts == []
    tx2, clock2, _, timeouts2 = server("INVITE")
    tx2.respond(response(tx2.request, 200), 0.0)
    clock2.run_until(40)
    assert timeouts2 == ["no ACK for 2xx"]


def test_non_invite_server_j() -> None:
    tx, clock, sent, _ = server("BYE")
    tx.respond(response(tx.request, 200), 0.0)
    tx.receive_retransmission(tx.request, 1.0)
    assert [s for _, s in sent] == [200, 200]
    tx.respond(response(tx.request, 500), 1.0)  # ignored: already completed
    clock.run_until(31.9)
    assert not tx.terminated
    clock.run_until(32.1)
    assert tx.terminated
    rtx, rclock, _, _ = server("BYE", reliable=True)
    rtx.respond(response(rtx.request, 200), 0.0)
    rclock.run_until(0.0)
    assert rtx.terminated


def test_rfc2543_matching_without_magic_cookie() -> None:
    a = request("INVITE", branch="old")
    b = request("INVITE", branch="old")
    assert server_key(a) == server_key(b) and server_key(a)[0] == "2543"
    assert server_key(request("INVITE", "z9hG4bK")) [0] == "2543"


def test_each_timer_is_handled_by_the_transactions_that_run_it() -> None:
    """The timer tables: client A B D E F K M, server G H I J L (RFC 3261 §17, RFC 6026),
    together every timer once; a handler is a method of its own class."""
    client, server = ClientTransaction.ON_TIMER, ServerTransaction.ON_TIMER
    assert {t.value for t in client} == set("ABDEFKM")
    assert {t.value for t in server} == set("GHIJL")
    assert set(client) | set(server) == set(Timer)
    for cls, table in ((ClientTransaction, client), (ServerTransaction, server)):
        assert all(getattr(cls, f.__name__) is f for f in table.values()), cls
