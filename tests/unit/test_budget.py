"""What the box stores for others is bounded in bytes and shared fairly: the byte budget of open
server transactions, a share per trusted source, the registrar's reserve (and, when a flood
comes from the registrar's own address, eviction of answered transactions to make room for it),
503 beyond, and the memory it really takes measured with tracemalloc."""

from __future__ import annotations

import configparser
import gc
import tracemalloc
from pathlib import Path

from firmware.events import IncomingCall
from firmware.sip.budget import BudgetLimits, TransactionBudget
from firmware.sip.message import Response, Serialized, parse_message
from firmware.sip.ua import UAConfig, UserAgent

from .test_hardening import SDP, request

PBX = ("127.0.0.1", 5060)  # the registrar
SBC = ("127.0.0.3", 5060)  # a trusted source
SBC2 = ("127.0.0.4", 5060)
LIMITS = BudgetLimits(total=64_000, registrar_reserve=24_000, source_share=24_000)


def ua(limits: BudgetLimits = LIMITS, **cfg: object) -> UserAgent:
    return UserAgent(UAConfig(server=PBX[0], port=PBX[1], username="a", register=False,
                              keepalive="off", trusted_sources=(SBC[0], SBC2[0]),
                              budget=limits, **cfg), ("127.0.0.1", 5070))  # type: ignore[arg-type]


def big_options(n: int, src: tuple[str, int], pad: int = 60) -> bytes:
    via = f"SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bKo{src[0]}x{n}"
    return request("OPTIONS", call_id=f"o{n}", via=via,
                   extra=tuple((f"X-Pad-{i}", "p" * pad) for i in range(pad)))


def statuses(u: UserAgent) -> list[int]:
    out = []
    for data, _ in u.datagrams_to_send():
        msg = parse_message(data)
        assert isinstance(msg, Response)
        out.append(msg.status)
    return out


# ----------------------------------------------------------------------------- the rules
def test_share_reserve_and_total() -> None:
    b = TransactionBudget(BudgetLimits(total=100, registrar_reserve=40, source_share=35))
    assert b.admit("s1", "sbc", False, 30) == []
    assert b.admit("s2", "sbc", False, 10) is None, "beyond the source's share"
    assert b.admit("t1", "sbc2", False, 31) is None, "all others together: total - reserve"
    assert b.admit("t2", "sbc2", False, 30) == []
    assert b.admit("r1", "pbx", True, 40) == [], "the registrar uses its reserve"
    assert b.admit("r2", "pbx", True, 1) is None, "full, and nothing may be evicted"
    assert b.used == 100 and b.peak == 100 and b.held("sbc") == 30
    b.release("s1")
    b.release("s1")  # twice: no effect
    assert b.used == 70 and b.held("sbc") == 0 and "s1" not in b
    assert b.admit("s3", "sbc", False, 30) == [], "its share is free again"


def test_registrar_evicts_answered_transactions_oldest_first() -> None:
    b = TransactionBudget(BudgetLimits(total=100, registrar_reserve=0, source_share=100))
    for name in ("a", "b", "c"):
        assert b.admit(name, "x", False, 30) == []
    b.settle("b", 30, evictable=True)
    b.settle("a", 20, evictable=True)  # answered later: younger in eviction order
    assert b.used == 80
    assert b.admit("s", "x", False, 30) is None, "a trusted source never evicts"
    assert b.admit("r", "pbx", True, 55) == ["b", "a"]
    assert "a" not in b and "b" not in b and "c" in b and b.used == 85
    assert b.admit("r2", "pbx", True, 30) is None, "only unanswered ones left: refused"


# ----------------------------------------------------------------------------- the user agent
def test_a_trusted_source_gets_503_beyond_its_share_and_the_pbx_still_rings() -> None:
    u = ua()
    got = []
    for n in range(60):
        u.receive_datagram(big_options(n, SBC), SBC, 0.0)
        got += statuses(u)
    assert 200 in got and 503 in got
    stored = got.count(200)
    assert u.counters["dropped_budget"] == got.count(503) == 60 - stored
    assert u.open_transactions == stored, "a 503 stores nothing"
    assert u.budget.held("127.0.0.3") <= LIMITS.source_share
    # a second trusted source gets its own share, but not the registrar's reserve
    for n in range(60):
        u.receive_datagram(big_options(n, SBC2), SBC2, 0.0)
        statuses(u)
    assert u.budget.used <= LIMITS.total - LIMITS.registrar_reserve + 4096
    # the PBX's call is stored and rings
    u.receive_datagram(request(body=SDP.format(port=7000)), PBX, 0.0)
    assert 503 not in statuses(u)
    assert any(isinstance(e, IncomingCall) for e in iter(u.next_event, None))


def test_a_flood_from_the_registrars_address_cannot_keep_its_calls_out() -> None:
    """Anyone can forge the PBX's address over UDP: that flood is the registrar's as far as
    the box can tell, so it is bounded by evicting answered transactions, oldest first."""
    u = ua()
    for n in range(300):
        u.receive_datagram(big_options(n, (PBX[0], 40000)), (PBX[0], 40000), n * 0.01)
        assert statuses(u) == [200]
    assert u.counters["transactions_evicted"] > 200 and u.counters["dropped_budget"] == 0
    assert u.budget.peak <= LIMITS.total + 4096 and u.open_transactions < 60
    assert len(u._deadlines) < 200, "evicted transactions leave the timer index too"
    u.receive_datagram(request(body=SDP.format(port=7000)), PBX, 3.0)
    assert statuses(u) == [100, 180]
    assert any(isinstance(e, IncomingCall) for e in iter(u.next_event, None))


def test_an_answered_transaction_keeps_only_its_response_bytes() -> None:
    u = ua()
    data = big_options(1, SBC)
    u.receive_datagram(data, SBC, 0.0)
    first = u.datagrams_to_send()
    (tx,) = u._server.values()
    assert isinstance(tx.last_response, Serialized)
    assert tx.request.headers.raw_all("X-Pad-1") == []
    cost = u.budget.used
    assert cost < len(data), "the request's 60 padded fields are no longer held"
    u.receive_datagram(data, SBC, 1.0)  # a retransmission gets the very same bytes
    assert u.datagrams_to_send() == first and u.counters["retransmissions_received"] == 1
    u.handle_timer(40.0)
    assert u.open_transactions == 0 and u.budget.used == 0 and len(u.budget) == 0


def test_memory_under_a_trusted_flood_stays_near_the_budget() -> None:
    """tracemalloc, not a stopwatch: what 3,000 of the costliest requests from a trusted
    source and from the registrar's address leave allocated is within 1.5x the byte budget."""
    limits = BudgetLimits()  # the defaults the box runs with: 2 MiB
    u = ua(limits)
    msgs = [(big_options(n, src, pad=80), src) for n in range(1500)
            for src in (SBC, (PBX[0], 40000))]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, (data, src) in enumerate(msgs):
        u.receive_datagram(data, src, i * 0.001)
        u.datagrams_to_send()
        u.get_timer()
    del data
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert u.counters["dropped_budget"] > 1000 and u.counters["transactions_evicted"] > 500
    assert grown <= 1.5 * limits.total, f"{grown} bytes held for a {limits.total} budget"


def test_the_service_bounds_the_process_too() -> None:
    """Beyond the budgets, systemd's cgroup caps the process (a leak: killed and restarted),
    and the whole system's OOM killer takes the door last, though it still may."""
    unit = Path(__file__).resolve().parents[2] / "systemd" / "intercom.service"
    svc = configparser.ConfigParser(strict=False, interpolation=None)
    svc.read(unit)
    s = svc["Service"]

    def mb(v: str) -> int:
        assert v.endswith("M"), v
        return int(v[:-1])

    assert 64 < mb(s["MemoryHigh"]) < mb(s["MemoryMax"]) <= 128
    assert -1000 < int(s["OOMScoreAdjust"]) < 0
    assert s["Restart"] == "always"
