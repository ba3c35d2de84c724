"""REGISTER exchanges against the scripted registrar (``devtools.registrar``): digest
challenges (MD5, SHA-256, stale nonces), refresh, 423, failures and backoff, keep-alive loss,
un-REGISTER, rport. The client's own timers are in test_registration_timers.py; INVITEs
challenged by a proxy in test_call_challenges.py."""

from __future__ import annotations

from devtools.registrar import UA_ADDR, auth_params
from devtools.registrar import ua_with_registrar as make
from firmware.events import Registered, RegistrationFailed, Unregistered
from firmware.sip.transaction import TimerConfig


def test_register_with_md5_challenge() -> None:
    ua, reg = make()
    ua.start(reg.now)
    reg.pump()
    assert [type(e) for e in reg.events()] == [Registered]
    assert ua.registered
    first, second = reg.registers()
    assert "Authorization" not in first.headers
    assert reg.check(second)
    assert first.call_id == second.call_id and second.cseq.number == first.cseq.number + 1
    assert first.top_via.branch != second.top_via.branch
    assert "rport" in first.top_via.params


def test_register_with_sha256_challenge() -> None:
    ua, reg = make()
    reg.algorithm = "SHA-256"
    ua.start(reg.now)
    reg.pump()
    assert ua.registered
    assert "algorithm=SHA-256" in (reg.registers()[-1].headers.get("Authorization") or "")


def test_refresh_before_expiry_with_nonce_count() -> None:
    ua, reg = make()
    reg.grant = 120
    ua.start(reg.now)
    reg.pump()
    assert reg.events()[0] == Registered(120, "<sip:5002@127.0.0.1:5070>")
    reg.advance(89)
    assert len(reg.registers()) == 2, "no refresh before granted - 30 s"
    reg.advance(2)
    assert len(reg.registers()) == 3, "refreshed at 90 s with the cached challenge"
    auth = reg.registers()[-1].headers.get("Authorization") or ""
    assert "nc=00000002" in auth, "nonce count increments on reuse"
    assert ua.registered


def test_stale_nonce_at_refresh_reuses_credentials_without_failure() -> None:
    """RFC 7616 §3.3 / RFC 2617 §3.2.1: stale=true means "the password was right, the nonce
    expired": answer the new nonce with the same credentials, however many answers this
    attempt already carried, and do not report a failure."""
    ua, reg = make()
    reg.grant = 60
    ua.start(reg.now)
    reg.pump()
    assert [type(e) for e in reg.events()] == [Registered]
    before = len(reg.registers())
    # The cached-credential refresh is rejected stale (first answer of this attempt), and so is
    # the answer to that new nonce (second answer: only the stale rule lets it through).
    reg.stale_next = 2
    reg.advance(31)
    refresh = reg.registers()[before:]
    nonces = [auth_params(r).get("nonce") for r in refresh]
    assert nonces == ["n1", "n2", "n3"], "cached nonce, then each stale challenge's new nonce"
    assert all(reg.check(r) for r in refresh), "every answer made with the same credentials"
    assert [auth_params(r)["nc"] for r in refresh] == ["00000002", "00000001", "00000001"]
    assert {r.call_id for r in refresh} == {refresh[0].call_id}
    assert [r.cseq.number for r in refresh] == list(range(refresh[0].cseq.number,
                                                          refresh[0].cseq.number + 3))
    assert reg.events() == [Registered(60, "<sip:5002@127.0.0.1:5070>")], \
        "the refresh succeeds; no RegistrationFailed"
    assert ua.registered and ua.counters["registrations_lost"] == 0
    reg.advance(30)
    assert ua.registered and len(reg.registers()) == before + 4, "next refresh on schedule"


def test_stale_nonce_on_first_answer_registers() -> None:
    """The answer to the first challenge arrives after its nonce expired (e.g. delayed by
    retransmissions): the stale 401 is answered once more, and registration succeeds."""
    ua, reg = make()
    reg.stale_next = 1
    ua.start(reg.now)
    reg.pump()
    assert [type(e) for e in reg.events()] == [Registered]
    assert [auth_params(r).get("nonce") for r in reg.registers()] == [None, "n1", "n2"]
    assert ua.registered


def test_endless_stale_challenges_end_in_one_failure_with_backoff() -> None:
    """A server answering every request stale=true must not drive a REGISTER storm: a few
    answers, then one failure and the normal backoff."""
    ua, reg = make(retry_min=2.0)
    reg.stale_next = 10**6

    def storm_guard(req):
        assert len(reg.registers()) < 20, "REGISTER storm: stale challenges answered forever"

    reg.custom = storm_guard
    ua.start(reg.now)
    reg.pump()
    events = reg.events()
    assert len(events) == 1 and isinstance(events[0], RegistrationFailed), events
    assert events[0].status == 401 and events[0].retry_in == 2.0
    assert 3 <= len(reg.registers()) <= 5, "bounded answers to stale challenges"
    assert not ua.registered


def test_423_min_expires() -> None:
    ua, reg = make(register_expires=60)
    reg.min_expires = 600
    ua.start(reg.now)
    reg.pump()
    assert ua.registered
    assert reg.registers()[-1].headers.get("Expires") == "600"


def test_wrong_password_one_clear_error_and_backoff() -> None:
    ua, reg = make(password="wrong", retry_min=2.0, retry_max=16.0)
    ua.start(reg.now)
    reg.pump()
    events = reg.events()
    assert len(events) == 1 and isinstance(events[0], RegistrationFailed)
    assert events[0].reason == ("registration rejected: 401 Unauthorized from 127.0.0.1:5060"
                                " — check sip.username / sip.password")
    assert "wrong" not in events[0].reason
    assert len(reg.registers()) == 2, "one challenge answered, then stop: no tight loop"
    reg.advance(100)
    retries = [e.retry_in for e in reg.events()]
    assert retries[:3] == [4.0, 8.0, 16.0] and set(retries[3:]) == {16.0}, "capped backoff"
    assert len(reg.registers()) == 2 * (1 + len(retries)), "one challenge per attempt"


def test_403_and_503_are_failures_with_retry() -> None:
    for status in ("403 Forbidden", "503 Service Unavailable"):
        ua, reg = make()
        reg.custom = lambda req, s=status, r=reg: r._reply(req, s)
        ua.start(reg.now)
        reg.pump()
        (ev,) = reg.events()
        assert isinstance(ev, RegistrationFailed) and ev.status == int(status[:3])
        assert status in ev.reason
        reg.custom = None
        reg.advance(ev.retry_in + 0.1)
        assert ua.registered


def test_timeout_then_server_comes_back() -> None:
    ua, reg = make(retry_min=1.0, retry_max=8.0)
    reg.up = False
    ua.start(reg.now)
    reg.advance(33)
    (ev,) = reg.events()
    assert isinstance(ev, RegistrationFailed) and "no response" in ev.reason
    assert reg.now >= 32, "Timer F = 64*T1"
    reg.up = True
    reg.advance(2)
    assert ua.registered


def test_transport_error_fails_fast() -> None:
    ua, reg = make(retry_min=1.0)
    reg.up = False
    ua.start(reg.now)
    reg.pump(until=0.1)
    ua.transport_error(("127.0.0.1", 5060), reg.now)
    (ev,) = reg.events()
    assert isinstance(ev, RegistrationFailed)
    assert ev.retry_in == 1.0


def test_keepalive_loss_triggers_reregistration() -> None:
    ua, reg = make(keepalive="options", keepalive_interval=5.0, retry_min=1.0,
                   timers=TimerConfig(0.1, 1.0, 1.0))
    ua.start(reg.now)
    reg.pump()
    reg.events()
    reg.advance(6)
    assert any(r.method == "OPTIONS" for r in reg.received)
    reg.up = False
    reg.advance(12)
    events = reg.events()
    assert any(isinstance(e, RegistrationFailed) and "keep-alive" in e.reason for e in events)
    assert not ua.registered
    reg.up = True
    reg.advance(20)
    assert ua.registered


def test_unregister_on_shutdown() -> None:
    ua, reg = make()
    ua.start(reg.now)
    reg.pump()
    reg.events()
    ua.shutdown(reg.now)
    reg.pump()
    last = reg.registers()[-1]
    assert last.headers.get("Expires") == "0"
    assert reg.events() == [Unregistered("shutdown")]


def test_rport_rewrites_contact() -> None:
    ua, reg = make()
    original = reg._reply

    def natted(req, status, extra="", tag=True):
        return original(req, status, extra, tag).replace(
            f";rport={UA_ADDR[1]}", ";rport=40000;received=127.0.0.7")

    reg._reply = natted
    ua.start(reg.now)
    reg.pump()
    assert ua.contact_addr == ("127.0.0.7", 40000)
    assert "127.0.0.7:40000" in (reg.registers()[-1].headers.get("Contact") or "")
    assert ua.counters["contact_rewrites"] == 1
    assert ua.registered
