"""More than one server, on a virtual clock: RFC 2782's SRV order with an injected random,
RFC 3263's NAPTR choice, the TargetSet policy (hold-down, Retry-After, probes, return), and the
user agent failing over between scripted registrars (``devtools.registrar``: each checks the
digest answers itself) and coming back, with a call that outlives the move. No sockets, no
DNS: the DNS half is tests/integration/test_failover.py with dnsmasq and two Asterisks."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from devtools.registrar import UA_ADDR, Registrar, Wire
from firmware.events import Registered, RegistrarMoved, RegistrationFailed
from firmware.sip.message import Request, parse_message
from firmware.sip.sdp import LocalMedia
from firmware.sip.targets import (
    MAX_TARGETS,
    Naptr,
    Srv,
    Target,
    TargetSet,
    order_srv,
    pick_naptr,
    srv_name,
)
from firmware.sip.transaction import TimerConfig
from firmware.sip.ua import CallState, UAConfig, UserAgent

A = Target("127.0.0.11", 5060, "pbx1.test", "SRV")
B = Target("127.0.0.12", 5062, "pbx2.test", "SRV")
C = Target("127.0.0.13", 5060, "pbx3.test", "SRV")


# ------------------------------------------------------------------ records
def test_srv_order_by_priority_then_weight_with_the_injected_random() -> None:
    recs = [Srv(20, 0, 5060, "backup"), Srv(10, 60, 5060, "a"), Srv(10, 40, 5060, "b")]
    # running sums in the priority-10 group (zero weights first): b=40, a=100
    assert [r.target for r in order_srv(recs, lambda n: 0)] == ["b", "a", "backup"]
    assert [r.target for r in order_srv(recs, lambda n: n)] == ["a", "b", "backup"]
    assert [r.target for r in order_srv(recs, lambda n: 41)] == ["a", "b", "backup"]
    assert [r.target for r in order_srv(recs, lambda n: 40)] == ["b", "a", "backup"]


def test_srv_weights_share_the_first_place_in_proportion() -> None:
    rng = random.Random(7)
    recs = [Srv(1, 70, 5060, "a"), Srv(1, 20, 5060, "b"), Srv(1, 10, 5060, "c"),
            Srv(1, 0, 5060, "z")]
    first = Counter(order_srv(recs, lambda n: rng.randint(0, n))[0].target
                    for _ in range(20000))
    assert abs(first["a"] / 20000 - 0.7) < 0.02
    assert abs(first["b"] / 20000 - 0.2) < 0.02
    assert abs(first["c"] / 20000 - 0.1) < 0.02
    assert 0.005 < first["z"] / 20000 < 0.015, "weight 0: first only when the random draws 0"


def test_srv_dot_means_no_service_and_port_zero_is_dropped() -> None:
    assert order_srv([Srv(0, 0, 5060, ".")], lambda n: 0) == []
    assert order_srv([Srv(0, 0, 0, "a"), Srv(1, 0, 5070, "b")], lambda n: 0) == \
        [Srv(1, 0, 5070, "b")]


def test_naptr_lowest_order_then_preference_for_the_transport() -> None:
    recs = [Naptr(20, 10, "s", "SIP+D2U", "_sip._udp.late.test"),
            Naptr(10, 50, "s", "SIP+D2U", "_sip._udp.second.test."),
            Naptr(10, 10, "s", "SIPS+D2T", "_sips._tcp.tls.test"),
            Naptr(10, 20, "s", "SIP+D2U", "_sip._udp.first.test"),
            Naptr(5, 10, "u", "SIP+D2U", "!^.*$!sip:x@y!")]
    assert pick_naptr(recs, "udp") == "_sip._udp.first.test"
    assert pick_naptr(recs, "tls") == "_sips._tcp.tls.test"
    assert pick_naptr(recs, "tcp") is None
    assert srv_name("pbx.test", "udp") == "_sip._udp.pbx.test"
    assert srv_name("pbx.test", "tls") == "_sips._tcp.pbx.test"


# ------------------------------------------------------------------ policy
def test_failure_moves_to_the_next_and_holds_the_failed_one_down() -> None:
    ts = TargetSet([A, B, C], failback=30)
    assert ts.current == A and ts.preferred
    assert ts.failed("timeout", now=0) == B
    assert ts.reason == "127.0.0.11:5060 failed: timeout" and ts.moves == 1
    assert ts.failed("timeout", now=1) == C, "A is held down: the next one is C"
    assert ts.failed("timeout", now=2) is None, "all held down: stay, back off"
    assert ts.current == C
    assert ts.failed("timeout", now=30) == A, "A's hold-down ended at 30"


def test_retry_after_holds_a_server_down_that_long() -> None:
    ts = TargetSet([A, B], failback=10)
    assert ts.failed("503", now=0, retry_after=120) == B
    assert ts.probe_target(now=10) is None, "A said Retry-After: 120"
    assert ts.probe_target(now=20) is None and ts.probe_target(now=119) is None
    assert ts.probe_target(now=120) == A


def test_probe_schedule_and_return_to_the_preferred() -> None:
    ts = TargetSet([A, B], failback=10)
    ts.failed("timeout", now=0)
    assert ts.probe_target(now=9.9) is None
    assert ts.probe_target(now=10) == A
    ts.probe_failed(now=10)
    assert ts.probe_target(now=19) is None and ts.probe_target(now=20) == A
    assert ts.answered(A, now=20) == A
    assert ts.preferred and ts.probe_at is None
    assert "answers again" in (ts.reason or "")
    assert ts.answered(B, now=21) is None, "B is not better than A"


def test_new_dns_answer_keeps_the_target_in_use_or_moves() -> None:
    ts = TargetSet([A, B], failback=10)
    ts.failed("timeout", now=0)
    assert ts.replace([A, Target(B.host, B.port, "other", "A")], now=1) is False
    assert ts.current.addr == B.addr
    assert ts.replace([B, A], now=1) is False and ts.targets == [A, B], \
        "the same servers in another weighted order: the order stays"
    assert ts.replace([B, C], now=1) is False and ts.current == B
    assert ts.replace([C], now=2) is True
    assert ts.current == C and "no longer in DNS" in (ts.reason or "")


def test_targets_are_capped_and_deduplicated() -> None:
    many = [Target(f"10.0.0.{i}", 5060, "x", "A") for i in range(40)]
    ts = TargetSet(many + many)
    assert len(ts.targets) == MAX_TARGETS
    with pytest.raises(ValueError):
        TargetSet([])


# ------------------------------------------------------------------ the user agent
class Servers(Wire):
    """Scripted registrars at several addresses; ``down`` ones receive nothing."""

    def __init__(self, ua: UserAgent, addrs: list[tuple[str, int]]) -> None:
        self.ua = ua
        self.regs = {a: Registrar(ua) for a in addrs}
        self.down: set[tuple[str, int]] = set()
        self.now = 0.0
        self.sent: list[tuple[tuple[str, int], Request]] = []
        self.inbox: list[tuple[tuple[str, int], bytes]] = []  # what the UA sent to a server

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr in self.down or not data.strip():
            return
        msg = parse_message(data)
        if not isinstance(msg, Request):
            self.inbox.append((addr, data))
            return
        self.sent.append((addr, msg))
        reg = self.regs[addr]
        reg.now = self.now
        reply = reg.answer(msg)
        if reply is None:
            self.inbox.append((addr, data))
        else:
            self.ua.receive_datagram(reply.encode(), addr, self.now)

    def registers_to(self, addr: tuple[str, int]) -> list[Request]:
        return [r for a, r in self.sent if a == addr and r.method == "REGISTER"]


def make(targets: list[Target] | None = None, failback: float = 30.0,
         **cfg: object) -> tuple[UserAgent, Servers]:
    targets = targets or [A, B]
    base: dict[str, object] = dict(
        server=targets[0].host, port=targets[0].port, username="5002", password="secret",
        domain="pbx.test", registrar_uri="sip:pbx.test", keepalive="off",
        register_expires=300, timers=TimerConfig(0.5, 4.0, 5.0), retry_min=2, retry_max=60)
    ua = UserAgent(UAConfig(**{**base, **cfg}), UA_ADDR)
    ua.use_targets(targets, 0.0, failback)
    return ua, Servers(ua, [t.addr for t in targets])


def test_every_target_is_trusted_and_nothing_else() -> None:
    ua, _ = make([A, B, C])
    assert ua.trust.trusted(("127.0.0.12", 5062)) and ua.trust.trusted(("127.0.0.13", 1))
    assert not ua.trust.trusted(("127.0.0.14", 5060))
    ua.set_registrar_addresses(["127.0.0.20"])  # the app adds the proxy's, the servers'
    assert ua.trust.trusted(("127.0.0.20", 5060)) and ua.trust.trusted(A.addr)


def test_a_silent_primary_moves_the_registration_to_the_secondary_at_once() -> None:
    ua, s = make()
    s.down.add(A.addr)
    ua.start(s.now)
    s.pump(until=31)
    assert not s.registers_to(B.addr), "Timer F (32 s) has not fired yet"
    s.advance(2)
    assert ua.registered and ua.server_addr == B.addr
    moved_at = s.registers_to(B.addr)[0]
    assert moved_at.uri == "sip:pbx.test", "the Request-URI is the domain, not the target"
    events = s.events()
    kinds = [type(e) for e in events]
    assert kinds == [RegistrarMoved, RegistrationFailed, Registered], kinds
    moved, failed = events[0], events[1]
    assert failed.retry_in == 0.0, "the next server at once, no backoff"
    assert moved.target == "127.0.0.12:5062" and not moved.preferred
    assert "127.0.0.11:5060 failed" in moved.reason and "no response" in moved.reason
    assert ua.counters["registrar_moves"] == 1


def test_503_with_retry_after_moves_and_holds_the_primary_down() -> None:
    ua, s = make(failback=10)
    s.regs[A.addr].custom = lambda req: s.regs[A.addr]._reply(
        req, "503 Service Unavailable", "Retry-After: 60 (maintenance)\r\n") \
        if req.method == "REGISTER" else None
    ua.start(s.now)
    s.pump(until=1)
    assert ua.registered and ua.server_addr == B.addr, "503 moves at once"
    probes = [r for a, r in s.sent if a == A.addr and r.method == "OPTIONS"]
    s.advance(50)
    assert [r for a, r in s.sent if a == A.addr and r.method == "OPTIONS"] == probes, \
        "no probe of A before its Retry-After ends"
    s.regs[A.addr].custom = None
    s.advance(15)
    assert ua.server_addr == A.addr and ua.registered, "back to A after Retry-After"


def test_a_rejected_account_does_not_move() -> None:
    ua, s = make()
    s.regs[A.addr].custom = lambda req: s.regs[A.addr]._reply(req, "403 Forbidden") \
        if req.method == "REGISTER" else None
    ua.start(s.now)
    s.pump(until=5)
    assert ua.server_addr == A.addr and not ua.registered
    assert not s.registers_to(B.addr), "403 is the account's fault: the same everywhere"


def test_lost_keepalives_move_a_registered_box() -> None:
    ua, s = make(keepalive="options", keepalive_interval=5)
    ua.start(s.now)
    s.pump(until=1)
    assert ua.registered and ua.server_addr == A.addr
    s.events()
    s.down.add(A.addr)
    s.advance(5 + 32 + 1)
    assert ua.registered and ua.server_addr == B.addr
    assert [type(e) for e in s.events()] == [RegistrarMoved, RegistrationFailed, Registered]


def test_the_preferred_server_is_probed_and_the_registration_returns() -> None:
    ua, s = make(failback=20)
    s.down.add(A.addr)
    ua.start(s.now)
    s.pump(until=40)
    assert ua.server_addr == B.addr
    s.events()
    s.advance(30)  # probes at ~53 go unanswered (A still down)
    assert ua.server_addr == B.addr and ua.counters["registrar_probes"] >= 1
    s.down.discard(A.addr)
    s.advance(45)
    assert ua.server_addr == A.addr and ua.registered
    events = s.events()
    assert [type(e) for e in events] == [RegistrarMoved, Registered], \
        "no RegistrationFailed: the box stays registered while it moves back"
    assert events[0].preferred and "answers again" in events[0].reason
    back = s.registers_to(A.addr)[-1]
    assert s.regs[A.addr].check(back), "A's own challenge answered, not B's"


INVITE = (
    "INVITE sip:5002@127.0.0.1:5070 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.12:5062;branch=z9hG4bKcall1\r\n"
    "From: <sip:5001@pbx.test>;tag=ph1\r\nTo: <sip:5002@pbx.test>\r\n"
    "Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:5001@127.0.0.12:5062>\r\n"
    "Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {n}\r\n\r\n{sdp}")
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.12\r\ns=-\r\nc=IN IP4 127.0.0.12\r\nt=0 0\r\n"
       "m=audio 31000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def test_the_user_agent_names_each_target_for_its_tls_check() -> None:
    ua, _ = make([A, B, Target("127.0.0.14", 5061, "10.0.0.14:5061", "address")])
    assert ua.server_name(A.addr) == "pbx1.test" and ua.server_name(B.addr) == "pbx2.test"
    assert ua.server_name(("127.0.0.14", 5061)) == "127.0.0.14"
    assert ua.server_name(("127.0.0.99", 5061)) is None, "not a target: no name of its own"


def _answer_on_the_secondary(ua: UserAgent, s: Servers) -> None:
    """The primary silent: the box moves to the secondary, which calls it; the box answers."""
    s.down.add(A.addr)
    ua.start(s.now)
    s.pump(until=40)
    assert ua.server_addr == B.addr
    ua.receive_datagram(INVITE.format(n=len(SDP), sdp=SDP).encode(), B.addr, s.now)
    s.pump(until=s.now)
    ua.answer(LocalMedia("127.0.0.1", 10000), s.now)


def test_a_call_from_the_secondary_survives_the_return_to_the_primary() -> None:
    ua, s = make(failback=20)
    _answer_on_the_secondary(ua, s)
    s.pump(until=s.now)
    assert ua.in_call and ua.call_state is CallState.CONFIRMED
    s.down.discard(A.addr)
    s.advance(30)
    assert ua.server_addr == A.addr, "the registration went back to A during the call"
    assert ua.in_call, "the call is not dropped by the move"
    ua.hangup(s.now)
    s.pump(until=s.now)
    byes = [a for a, r in s.sent if r.method == "BYE"]
    assert byes == [B.addr], "the call's BYE goes to the server that carries it"


def test_outbound_proxy_gets_every_request_with_a_loose_route() -> None:
    proxy = Target("127.0.0.30", 5060, "proxy.test", "A")
    ua, s = make([proxy], outbound_proxy="sip:proxy.test;lr")
    ua.start(s.now)
    s.pump(until=1)
    assert ua.registered
    reg = s.registers_to(proxy.addr)[-1]
    assert reg.uri == "sip:pbx.test"
    assert reg.headers.get_all("Route") == ["<sip:proxy.test;lr>"]
    ua.make_call("5001", LocalMedia("127.0.0.1", 10000), s.now)
    s.pump(until=s.now)
    invite = [r for a, r in s.sent if r.method == "INVITE"][0]
    assert invite.headers.get_all("Route") == ["<sip:proxy.test;lr>"]
    assert invite.uri == "sip:5001@pbx.test"


def test_a_call_from_a_server_we_are_not_registered_with_is_answered_there() -> None:
    """The binding at the secondary outlives a return to the primary (until it expires): a
    call it still sends is carried by it, in-dialog requests included."""
    ua, s = make()
    ua.start(s.now)
    s.pump(until=1)
    assert ua.server_addr == A.addr
    ua.receive_datagram(INVITE.format(n=len(SDP), sdp=SDP).encode(), B.addr, s.now)
    s.pump(until=s.now)
    ua.answer(LocalMedia("127.0.0.1", 10000), s.now)
    s.pump(until=s.now)
    ua.hangup(s.now)
    s.pump(until=s.now)
    assert [a for a, r in s.sent if r.method == "BYE"] == [B.addr]


def test_the_app_reports_the_server_in_use_and_trusts_every_configured_one() -> None:
    """App on fakes with an explicit ordered list: the first is used, both are trusted, and
    status says which, how it was found, and the list."""
    from devtools.box.fakes import PBX_ADDR, FakeBox, run

    box = FakeBox(sip={"server": [f"{PBX_ADDR[0]}:{PBX_ADDR[1]}", "127.0.0.9:5090"],
                       "register": True})

    async def scenario() -> None:
        await box.app.start()
        box.pump()
        assert box.app.ua is not None and box.app.ua.registered
        reg = box.app.status()["registrar"]
        assert reg["address"] == f"{PBX_ADDR[0]}:{PBX_ADDR[1]}" and reg["preferred"] is True
        assert reg["targets"] == [f"{PBX_ADDR[0]}:{PBX_ADDR[1]}", "127.0.0.9:5090"]
        assert reg["via"] == "address" and reg["moved"] is None and reg["moves"] == 0
        trust = box.app.ua.trust
        assert trust.trusted(("127.0.0.9", 5090)) and trust.trusted(PBX_ADDR)
        assert not trust.trusted(("127.0.0.10", 5060))

    run(scenario())


def test_the_app_shows_skipped_servers_and_logs_each_reason_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """A server the resolver left out (IPv6 only): status ``registrar.skipped`` says why, and
    the log says it once, not at every new DNS answer (one follows each registration)."""
    from devtools.box.fakes import PBX_ADDR, FakeBox, run

    box = FakeBox(sip={"server": [f"{PBX_ADDR[0]}:{PBX_ADDR[1]}"], "register": True})
    why = "'pbx1.test' has only IPv6 (AAAA) addresses and the box speaks IPv4 only"
    box.net.skipped = [why]

    async def scenario() -> None:
        await box.app.start()
        box.pump()
        for _ in range(3):
            await box.app.refresh_registrar()
        assert box.app.status()["registrar"]["skipped"] == [why]
        box.net.skipped = []
        await box.app.refresh_registrar()
        assert box.app.status()["registrar"]["skipped"] == [], "DNS answers it again: gone"

    with caplog.at_level("WARNING", logger="intercom"):
        run(scenario())
    said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert said == [f"SIP server skipped: {why}"]


def test_server_lists_proxy_and_dns_servers_are_checked_and_normalised() -> None:
    from firmware.config import ConfigError, parse_config

    sip = parse_config('sip: {server: [pbx1.test, "10.0.0.2:5080", "::1"], username: a, '
                       'outbound_proxy: "kam.test:5066", dns_servers: ["127.0.0.1:5353"]}').sip
    assert sip.server == "pbx1.test"
    assert sip.servers == ("pbx1.test", "10.0.0.2:5080", "[::1]:5060")
    assert sip.outbound_proxy == "kam.test:5066" and sip.dns_servers == ("127.0.0.1:5353",)
    assert parse_config("sip: {server: pbx.test, port: 5070, username: a}").sip.servers == \
        ("pbx.test:5070",), "an explicit sip.port: A records, no SRV"
    for bad, words in (("server: []", "must not be an empty list"),
                       ('server: "x:0"', "optional :port"),
                       ("server: [1]", "as strings"),
                       ("server: [a, 010.0.0.1]", "not a valid IP address"),
                       ("server: a, dns_servers: [pbx.test]", "not an IP address"),
                       ("server: a, outbound_proxy: 'a b'", "sip.outbound_proxy"),
                       ("server: a, servers: [b]", "unknown key sip.servers")):
        with pytest.raises(ConfigError, match=words):
            parse_config(f"sip: {{{bad}, username: a}}")


def test_intercom_status_says_which_server_and_why_it_moved(
        capsys: pytest.CaptureFixture[str]) -> None:
    from firmware.cli import _print_status

    base = {"username": "5002", "server": "pbx.test:5060", "transport": "udp",
            "registered": True, "state": "idle", "remote": None}
    _print_status({**base, "registrar": {
        "address": "127.0.0.12:5062", "name": "pbx2.test", "preferred": False,
        "targets": ["127.0.0.11:5060", "127.0.0.12:5062"],
        "moved": "127.0.0.11:5060 failed: no response",
        "skipped": ["'pbx3.test' has only IPv6 (AAAA) addresses"]}})
    out = capsys.readouterr().out
    assert "server: 127.0.0.12:5062 (pbx2.test), BACKUP of 2; last moved: 127.0.0.11:5060 " \
           "failed: no response" in out
    assert "server skipped: 'pbx3.test' has only IPv6 (AAAA) addresses" in out
    _print_status({**base, "registrar": {"address": "10.0.0.1:5060", "targets": ["10.0.0.1:5060"],
                                         "moved": None}})
    assert "server:" not in capsys.readouterr().out, "one server, never moved: nothing to say"


def test_over_a_stream_the_return_follows_a_probe_never_during_a_call() -> None:
    """Over TCP/TLS the probe goes beside the working connection (``UserAgent.probing``
    tells the adapter so); none while a call needs B's stream; the move back only once A
    answered one."""
    ua, s = make(failback=20, transport="tcp")
    _answer_on_the_secondary(ua, s)
    s.down.discard(A.addr)
    s.advance(25)  # the return was due at ~53 (moved at ~33, failback 20); no ACK: < Timer H
    assert ua.server_addr == B.addr and ua.in_call, "no move while the call needs B's stream"
    assert not [r for a, r in s.sent if r.method == "OPTIONS"], "no probe during the call"
    ua.hangup(s.now)
    s.advance(25)
    assert ua.server_addr == A.addr and ua.registered
    probes = [r for a, r in s.sent if a == A.addr and r.method == "OPTIONS"]
    assert len(probes) == 1, "the move back followed one answered probe"
    assert s.sent.index((A.addr, probes[0])) < s.sent.index((A.addr, s.registers_to(A.addr)[-1]))


def test_over_a_stream_a_primary_still_down_never_takes_the_registration_off_the_backup() -> None:
    """The probes to a silent A fail on their own; the registration stays with B throughout
    (over a stream a try that moved the one connection would leave the box unreachable)."""
    ua, s = make(failback=5, transport="tcp")
    s.down.add(A.addr)
    ua.start(s.now)
    s.pump(until=40)
    assert ua.server_addr == B.addr and ua.registered
    seen = []
    for _ in range(40):
        s.advance(3)
        seen.append((ua.server_addr, ua.registered, ua.failover is not None
                     and ua.failover.probing(A.addr)))
    assert {(addr, up) for addr, up, _ in seen} == {(B.addr, True)}
    assert any(probing for *_, probing in seen), "A was probed meanwhile"
    assert ua.counters["registrar_probes"] >= 2 and ua.counters["registrar_moves"] == 1
