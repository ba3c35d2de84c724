"""A scripted registrar/proxy peer, sans-I/O, for the unit tests of registration and
authentication and the box on fakes (devtools.box.fakes).

It answers what the user agent sends, building responses as plain text, and checks digest
responses with hashlib on its own, so the UA's digest code is verified, not trusted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from firmware.sip.message import Request, parse_message
from firmware.sip.transaction import TimerConfig
from firmware.sip.ua import UAConfig, UserAgent

SERVER = ("127.0.0.1", 5060)
UA_ADDR = ("127.0.0.1", 5070)


def _params(value: str) -> dict[str, str]:
    return {k.lower(): v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', value)}


def auth_params(req: Request, header: str = "Authorization") -> dict[str, str]:
    """The parameters of a request's credentials ({} when it carries none)."""
    return _params(req.headers.get(header) or "")


class Wire:
    """A user agent wired to scripted servers on a virtual clock: ``pump`` hands every datagram
    the UA sends to ``deliver`` and runs its timers up to ``until``; subclasses answer."""

    ua: UserAgent
    now: float

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        raise NotImplementedError

    def pump(self, until: float | None = None) -> None:
        for _ in range(100_000):
            out = self.ua.datagrams_to_send()
            for data, addr in out:
                self.deliver(data, addr)
            if out:
                continue
            t = self.ua.get_timer()
            if until is None or t is None or t > until:
                if until is not None:
                    self.now = max(self.now, until)
                return
            self.now = max(self.now, t)
            self.ua.handle_timer(self.now)
        raise AssertionError("did not settle")

    def advance(self, seconds: float) -> None:
        self.pump(until=self.now + seconds)

    def events(self) -> list:
        out = []
        while (ev := self.ua.next_event()) is not None:
            out.append(ev)
        return out


class Registrar(Wire):
    def __init__(self, ua: UserAgent, password: str = "secret", realm: str = "asterisk",
                 algorithm: str = "MD5", min_expires: int | None = None,
                 grant: int | None = None) -> None:
        self.ua = ua
        self.password = password
        self.realm = realm
        self.algorithm = algorithm
        self.min_expires = min_expires
        self.grant = grant
        self.nonce_n = 0
        self.nonces: set[str] = set()
        self.received: list[Request] = []
        self.up = True
        self.now = 0.0
        self.custom: Callable[[Request], str | None] | None = None
        self.stale_next = 0  # how many correctly answered REGISTERs get 401 stale=true

    # ---------------------------------------------------------------- responses
    def _reply(self, req: Request, status: str, extra: str = "", tag: bool = True) -> str:
        via = req.headers.get_all("Via")[0]
        via = via.replace(";rport", f";rport={UA_ADDR[1]}")
        to = req.headers.get("To") or ""
        if tag and ";tag=" not in to:
            to += ";tag=reg1"
        return (f"SIP/2.0 {status}\r\nVia: {via}\r\nFrom: {req.headers.get('From')}\r\n"
                f"To: {to}\r\nCall-ID: {req.call_id}\r\nCSeq: {req.headers.get('CSeq')}\r\n"
                f"{extra}Content-Length: 0\r\n\r\n")

    def challenge(self, req: Request, code: int = 401, stale: bool = False) -> str:
        self.nonce_n += 1
        nonce = f"n{self.nonce_n}"
        self.nonces.add(nonce)
        name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        phrase = "Unauthorized" if code == 401 else "Proxy Authentication Required"
        st = ", stale=true" if stale else ""
        return self._reply(req, f"{code} {phrase}",
                           f'{name}: Digest realm="{self.realm}", nonce="{nonce}", '
                           f'qop="auth", algorithm={self.algorithm}{st}\r\n')

    def check(self, req: Request, header: str = "Authorization") -> bool:
        value = req.headers.get(header)
        if not value:
            return False
        p = _params(value)
        h = hashlib.md5 if self.algorithm == "MD5" else hashlib.sha256

        def hx(s: str) -> str:
            return h(s.encode()).hexdigest()

        ha1 = hx(f"{p['username']}:{self.realm}:{self.password}")
        ha2 = hx(f"{req.method}:{p['uri']}")
        want = hx(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{ha2}")
        return p.get("response") == want and p["nonce"] in self.nonces

    def answer(self, req: Request) -> str | None:
        if self.custom is not None and (custom := self.custom(req)) is not None:
            return custom
        if req.method == "OPTIONS":
            return self._reply(req, "200 OK")
        if req.method != "REGISTER":
            return None
        if self.stale_next and self.check(req):
            self.stale_next -= 1
            return self.challenge(req, stale=True)
        if not self.check(req):
            return self.challenge(req)
        expires = int(req.headers.get("Expires") or "3600")
        if self.min_expires and 0 < expires < self.min_expires:
            return self._reply(req, "423 Interval Too Brief",
                               f"Min-Expires: {self.min_expires}\r\n")
        granted = self.grant if self.grant is not None and expires else expires
        contact = re.sub(r"[<>]", "", req.headers.get("Contact") or "")
        return self._reply(req, "200 OK", f"Contact: <{contact}>;expires={granted}\r\n"
                           if expires else "")

    # ---------------------------------------------------------------- the wire
    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        assert addr == SERVER
        if not self.up or not data.strip():
            return
        req = parse_message(data)
        assert isinstance(req, Request)
        self.received.append(req)
        reply = self.answer(req)
        if reply is not None:
            self.ua.receive_datagram(reply.encode(), SERVER, self.now)

    def registers(self) -> list[Request]:
        return [r for r in self.received if r.method == "REGISTER"]


def ua_with_registrar(password: str = "secret", **cfg: object) -> tuple[UserAgent, Registrar]:
    """Extension 5002 (keep-alive off, 300 s expiry, fast timers; ``cfg`` overrides) and the
    registrar it registers with."""
    base: dict[str, object] = dict(
        server=SERVER[0], port=SERVER[1], username="5002", password=password,
        keepalive="off", register_expires=300, timers=TimerConfig(0.5, 4.0, 5.0))
    ua = UserAgent(UAConfig(**{**base, **cfg}), UA_ADDR)
    return ua, Registrar(ua)
