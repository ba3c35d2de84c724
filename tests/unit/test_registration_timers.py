"""The registration client (``sip/registration.py``) on a virtual clock, against the scripted
registrar: its own deadline (refresh, retry, keep-alive), retransmission and Timer F of its
REGISTER transactions, the retry backoff, and a second account as a second ``Registration``."""

from __future__ import annotations

from typing import Any

from devtools.registrar import SERVER, UA_ADDR, Registrar
from firmware.events import Registered, RegistrationFailed, Unregistered
from firmware.sip.message import Request, parse_message
from firmware.sip.registration import RegState
from firmware.sip.transaction import TimerConfig
from firmware.sip.ua import UAConfig, UserAgent

BASE: dict[str, Any] = dict(server=SERVER[0], port=SERVER[1], password="secret", keepalive="off",
            timers=TimerConfig(0.5, 4.0, 5.0))


class TimedRegistrar(Registrar):
    """The scripted registrar, remembering when each request reached it."""

    def __init__(self, ua: UserAgent, **kw: object) -> None:
        super().__init__(ua, **kw)  # type: ignore[arg-type]
        self.log: list[tuple[float, Request]] = []

    def answer(self, req: Request) -> str | None:
        self.log.append((self.now, req))
        return super().answer(req)

    def pump(self, until: float | None = None) -> None:
        if self.up:
            super().pump(until)
            return
        while True:  # down: the base pump drops requests unseen; log them, answer none
            for data, _addr in self.ua.datagrams_to_send():
                if data.strip():
                    req = parse_message(data)
                    assert isinstance(req, Request)
                    self.log.append((self.now, req))
            t = self.ua.get_timer()
            if t is None or (until is not None and t > until):
                self.now = max(self.now, until if until is not None else self.now)
                return
            self.now = max(self.now, t)
            self.ua.handle_timer(self.now)

    def users(self, method: str = "REGISTER") -> list[tuple[float, str]]:
        return [(t, r.from_.uri.user or "") for t, r in self.log  # type: ignore[union-attr]
                if r.method == method]


def test_two_accounts_register_and_refresh_on_their_own_timers() -> None:
    ua = UserAgent(UAConfig(username="5002", register_expires=120, **BASE), UA_ADDR)
    second = ua.add_registration(UAConfig(username="5003", register_expires=300, **BASE))
    reg = TimedRegistrar(ua)
    ua.start(reg.now)
    reg.pump()
    assert ua.reg.state is RegState.REGISTERED and second.state is RegState.REGISTERED
    assert {e.contact for e in reg.events() if isinstance(e, Registered)} == {
        "<sip:5002@127.0.0.1:5070>", "<sip:5003@127.0.0.1:5070>"}
    assert ua.reg.call_id != second.call_id, "each binding has its own Call-ID"
    assert reg.check(reg.log[-1][1]), "each account answers the challenge with its own name"
    # each refreshes granted - 30 s after its own registration, on its own deadline
    assert (ua.reg.next_deadline(), second.next_deadline()) == (90.0, 270.0)
    reg.advance(280)
    refreshes = [(t, u) for t, u in reg.users() if t > 0]
    assert [t for t, u in refreshes if u == "5002"] == [90.0, 180.0, 270.0]
    assert [t for t, u in refreshes if u == "5003"] == [270.0]
    assert len(refreshes) == 4, "a cached challenge answers each refresh at once"
    assert ua.registered and second.registered
    reg.events()
    ua.shutdown(reg.now)
    reg.pump()
    removed = {(u, r.headers.get("Expires")) for _, r in reg.log
               if r.method == "REGISTER" and r.headers.get("Expires") == "0"
               for u in [r.from_.uri.user]}  # type: ignore[union-attr]
    assert removed == {("5002", "0"), ("5003", "0")}, "each account removes its own binding"
    assert reg.events() == [Unregistered("shutdown")] * 2
    assert ua.reg.state is RegState.UNREGISTERED and second.state is RegState.UNREGISTERED


def test_register_retransmits_then_timer_f_then_backs_off_to_the_cap() -> None:
    ua = UserAgent(UAConfig(username="5002", retry_min=2.0, retry_max=8.0, **BASE), UA_ADDR)
    reg = TimedRegistrar(ua)
    reg.up = False
    ua.start(0.0)
    reg.pump(until=33.0)
    first = [t for t, _ in reg.log]
    # Timer E doubles from T1 up to T2 (4 s): 0, .5, 1.5, 3.5, 7.5, then every 4 s
    assert first == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert len({r.top_via.branch for _, r in reg.log}) == 1, "retransmissions, one branch"
    (ev,) = reg.events()
    assert isinstance(ev, RegistrationFailed) and ev.retry_in == 2.0
    assert ev.reason == "registration failed: no response from 127.0.0.1:5060"
    assert ua.reg.state is RegState.UNREGISTERED
    assert ua.reg.next_deadline() == 34.0, "Timer F at 32 s, retry 2 s later"
    reg.pump(until=200.0)
    retries = [e.retry_in for e in reg.events() if isinstance(e, RegistrationFailed)]
    assert retries == [4.0, 8.0, 8.0, 8.0], "doubles, then holds at retry_max"
    starts = sorted({min(t for t, r in reg.log if r.top_via.branch == b)
                     for b in {r.top_via.branch for _, r in reg.log}})
    assert starts == [0.0, 34.0, 70.0, 110.0, 150.0, 190.0]
    reg.up = True
    reg.pump(until=200.0 + 8.0)
    assert ua.registered and ua.reg.backoff == 2.0, "success resets the backoff"


def test_refresh_fires_from_the_registrations_own_deadline() -> None:
    ua = UserAgent(UAConfig(username="5002", register_expires=40, **BASE), UA_ADDR)
    reg = TimedRegistrar(ua)
    ua.start(0.0)
    reg.pump()
    assert ua.reg.granted == 40
    assert ua.reg.next_deadline() == 20.0, "under 60 s a binding is refreshed at half-time"
    ua.reg.handle_timer(19.9)
    assert ua.datagrams_to_send() == []
    ua.reg.handle_timer(20.0)
    (data, addr), = ua.datagrams_to_send()
    assert addr == SERVER and data.startswith(b"REGISTER ")
    assert b"Authorization: Digest" in data, "the refresh reuses the cached challenge"
    assert ua.reg.state is RegState.REGISTERED, "refreshing keeps the binding"
    assert ua.reg.next_deadline() is None, "no second refresh armed while one is under way"


def test_a_second_accounts_registrar_stays_trusted() -> None:
    ua = UserAgent(UAConfig(username="5002", **BASE), UA_ADDR)
    ua.add_registration(UAConfig(username="7001", **{**BASE, "server": "127.0.0.3"}))
    assert ua.trust.trusted(("127.0.0.3", 5060))
    ua.set_registrar_addresses(["127.0.0.1"])  # the first registrar's name resolved again
    assert ua.trust.trusted(("127.0.0.3", 5060)), "re-resolving one registrar drops no other"
    assert not ua.trust.trusted(("127.0.0.4", 5060))
