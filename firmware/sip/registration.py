"""One account's registration client (baresip's ``sipreg``): REGISTER, refresh, 423, backoff,
keep-alive, digest authentication with stale-nonce renewal, un-REGISTER, RFC 3581 Contact
rewriting.

Owns one binding: its Call-ID, CSeq space, credentials, state (``RegState``) and its two timers
(refresh/retry and keep-alive), exposed as ``next_deadline()`` / ``handle_timer(now)`` like the
transactions. Every one of those delays is spread at random (``spread``): a building's boxes that
lost their PBX at the same moment must not come back at the same moment (RFC 5626 §4.5's
jittered backoff, §4.4.1's keep-alive spread). A second account is a second ``Registration``.
Talks to the user agent only through ``stack.Stack``; knows nothing about calls, the facade's
transaction tables, sockets or clocks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from enum import StrEnum

from ..events import Registered, RegistrationFailed, Unregistered
from .auth import Challenge, DigestClient
from .errors import RemoteProtocolError
from .headers import parse_uint, uint_or_none
from .message import Response
from .stack import MAX_AUTH_ANSWERS, Stack, UAConfig, challenge_of, fmt_addr, ignore_response
from .transaction import Addr, ClientTransaction
from .uri import SipUri, is_ip_literal

# The fraction of each delay left to chance: a retry waits 50-100 % of its backoff (RFC 5626
# §4.5), a refresh and a keep-alive 80-100 % of theirs (§4.4.1).
RETRY_SPREAD = 0.5
REFRESH_SPREAD = 0.2
KEEPALIVE_SPREAD = 0.2
SPREAD_SOURCE: Callable[[], float] = random.random  # what a new Registration draws from


def spread(delay: float, fraction: float, rand: Callable[[], float]) -> float:
    """``delay`` shortened by up to ``fraction`` of it, at random (``rand()`` in [0, 1))."""
    return delay * (1.0 - fraction * rand())


class RegState(StrEnum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    UNREGISTERING = "unregistering"


# (reason, status, Retry-After, now) -> another server to register with at once, or None
OnFailure = Callable[[str, int | None, float | None, float], Addr | None]


class Registration:
    """The binding of one account (``config.username``) at one registrar (``server_addr``)."""

    def __init__(self, stack: Stack, config: UAConfig, server_addr: Addr) -> None:
        self._stack = stack
        self.config = config
        self.server_addr = server_addr
        self.auth = DigestClient(config.auth_username or config.username, config.password)
        self.call_id = stack.token(12)
        self.from_tag = stack.token(6)
        self.cseq = 0
        self.state = RegState.UNREGISTERED
        self.expires = config.register_expires
        self.granted = 0
        self.backoff = config.retry_min
        self.auth_tries = 0
        self.challenge: Challenge | None = None
        self.last_error: str | None = None
        self._refresh_at: float | None = None  # refresh of a binding, or the next retry
        self._keepalive_at: float | None = None
        self._keepalive_tx: ClientTransaction | None = None
        self.rand: Callable[[], float] = SPREAD_SOURCE  # the spread's source
        self.on_failure: OnFailure | None = None  # failover.py: moves us to another server
        self._tx: ClientTransaction | None = None  # the REGISTER whose answer counts

    # ------------------------------------------------------------------ facade
    @property
    def registered(self) -> bool:
        """Registered, or refreshing a binding that still holds."""
        return self.state is RegState.REGISTERED or (
            self.state is RegState.REGISTERING and self.granted > 0)

    @property
    def aor(self) -> SipUri:
        return SipUri(host=self.config.aor_domain, user=self.config.username)

    def next_deadline(self) -> float | None:
        a, b = self._refresh_at, self._keepalive_at
        if a is None or (b is not None and b < a):
            return b
        return a

    def handle_timer(self, now: float) -> None:
        due = sorted((t, name) for name, t in (("refresh", self._refresh_at),
                                               ("keepalive", self._keepalive_at))
                     if t is not None and t <= now)
        for _, name in due:
            if name == "refresh":
                self._refresh_at = None
                self.auth_tries = 0
                self._send_register(now)
            else:
                self._keepalive_at = None
                self._keepalive(now)

    def start(self, now: float) -> None:
        if self.config.register:
            self._send_register(now)
        self._arm_keepalive(now)

    def stop(self, now: float) -> None:
        """Remove the binding (un-REGISTER) and stop refreshing and keep-alives."""
        self._refresh_at = None
        if self.state in (RegState.REGISTERED, RegState.REGISTERING) and self.config.register:
            self.state = RegState.UNREGISTERING
            self._send_register(now, expires=0)
        self._keepalive_at = None

    def connection_lost(self, reason: str, now: float) -> None:
        if self.config.register and self.state in (RegState.REGISTERED, RegState.REGISTERING):
            self._failed(f"connection to the registrar lost: {reason}", None, now)

    def restart(self, now: float) -> None:
        """The transport reconnected (new local port): register again at once."""
        if self.config.register and self.state is not RegState.UNREGISTERING:
            self._refresh_at = None
            self.auth_tries = 0
            self._send_register(now)

    def move_to(self, addr: Addr, now: float) -> None:
        """Register with another server now (the binding here stays until it expires): its
        own challenge; still ``registered`` meanwhile when the binding held."""
        self.server_addr = addr
        self.challenge, self.auth_tries, self._refresh_at = None, 0, None
        if self.config.register and self.state is not RegState.UNREGISTERING:
            self._send_register(now)

    # ------------------------------------------------------------------ REGISTER
    def _send_register(self, now: float, expires: int | None = None) -> None:
        self.cseq += 1
        aor = str(self.aor)
        uri = self.config.registrar_uri or f"sip:{self.config.aor_domain}"
        if not self.config.registrar_uri and \
                self.server_addr[1] != self._stack.transport.default_port:
            uri += f":{self.server_addr[1]}"
        req = self._stack.new_request("REGISTER", uri, f"<{aor}>;tag={self.from_tag}",
                                      f"<{aor}>", self.call_id, self.cseq,
                                      user=self.config.username)
        req.headers.add("Expires", str(self.expires if expires is None else expires))
        if self.challenge is not None:
            req.headers.add(*self.auth.authorization(self.challenge, "REGISTER", uri))
        if self.state is RegState.UNREGISTERED:
            self.state = RegState.REGISTERING
        self._tx = self._stack.start_client(req, self.server_addr, now, self._on_response,
                                            self._on_timeout)

    def _on_response(self, resp: Response, tx: ClientTransaction, now: float) -> None:
        if tx is not self._tx:
            return  # a REGISTER since replaced (a move to another server, a reconnect)
        try:
            self._response(resp, now)
        except RemoteProtocolError as exc:
            # never leave the registration half-updated with no refresh timer armed
            self._stack.counters["dropped_malformed"] += 1
            if self.state is RegState.UNREGISTERING:
                self.state, self.granted = RegState.UNREGISTERED, 0
                self._stack.emit(Unregistered("unusable answer to un-REGISTER"))
                return
            self._failed(f"unusable answer from the registrar: {exc.reason}", resp.status, now)

    def _response(self, resp: Response, now: float) -> None:
        if resp.status < 200:
            return
        unregistering = self.state is RegState.UNREGISTERING
        if resp.status in (401, 407):
            challenge = challenge_of(resp)
            if challenge is not None and (self.auth_tries == 0 or (
                    challenge.stale and self.auth_tries < MAX_AUTH_ANSWERS)):
                self.auth_tries += 1
                self.challenge = challenge
                self._send_register(now, expires=0 if unregistering else None)
                return
        elif resp.status == 423 and not unregistering:
            minimum = uint_or_none(resp.headers.get("Min-Expires"), 86400)
            if minimum is not None and minimum > self.expires:
                self.expires = minimum
                self._send_register(now)
                return
        self.auth_tries = 0
        if unregistering:
            self.state, self.granted = RegState.UNREGISTERED, 0
            self._stack.emit(Unregistered("shutdown"))
            return
        if 200 <= resp.status < 300:
            self._registered(resp, now)
        else:
            hint = " — check sip.username / sip.password" if resp.status in (401, 403, 407) \
                else ""
            self._failed(f"registration rejected: {resp.status} {resp.reason} from "
                         f"{fmt_addr(self.server_addr)}{hint}", resp.status, now,
                         _retry_after(resp.headers.get("Retry-After")))

    def _on_timeout(self, tx: ClientTransaction, now: float) -> None:
        if tx is not self._tx:
            return
        if self.state is RegState.UNREGISTERING:
            self.state = RegState.UNREGISTERED
            self._stack.emit(Unregistered("no answer to un-REGISTER"))
            return
        why = self._stack.transport_reason or f"no response from {fmt_addr(self.server_addr)}"
        self._failed(f"registration failed: {why}", None, now)

    def _registered(self, resp: Response, now: float) -> None:
        granted = self._granted_expires(resp)
        if self._learn_public_address(resp):
            self.state, self.granted = RegState.REGISTERING, 0
            self._send_register(now)
            return
        self.state, self.granted, self.last_error = RegState.REGISTERED, granted, None
        self.backoff = self.config.retry_min
        refresh = granted * 0.5 if granted < 60 else granted - 30
        self._refresh_at = now + max(spread(refresh, REFRESH_SPREAD, self.rand), 1.0)
        self._arm_keepalive(now)
        self._stack.emit(Registered(granted, self._stack.contact(self.config.username)))

    def _granted_expires(self, resp: Response) -> int:
        host, port = self._stack.contact_addr
        for na in resp.contacts:
            uri = na.uri
            if isinstance(uri, SipUri) and uri.user == self.config.username and \
                    uri.host == host.lower() and (uri.port or 5060) == port:
                if na.params.get("expires"):
                    return parse_uint(na.params["expires"] or "", "expires", 2**32 - 1)
        header = uint_or_none(resp.headers.get("Expires"), 2**32 - 1)
        return self.expires if header is None else header

    def _learn_public_address(self, resp: Response) -> bool:
        """RFC 3581: the server saw us at received:rport. True when our Contact must change."""
        stack = self._stack
        if not self.config.rewrite_contact or stack.transport.reliable:
            return False
        via = resp.top_via
        host = via.params.get("received") or stack.contact_addr[0]
        port = uint_or_none(via.params.get("rport"), 65535) or stack.contact_addr[1]
        if host != stack.contact_addr[0] and not is_ip_literal(host):
            host = stack.contact_addr[0]  # only an address may go into our Contact
        if (host, port) != stack.contact_addr:
            stack.contact_addr = (host, port)
            stack.counters["contact_rewrites"] += 1
            return True
        return False

    def _failed(self, reason: str, status: int | None, now: float,
                retry_after: int | None = None) -> None:
        was_registered = self.state is RegState.REGISTERED
        self.state, self.granted, self.last_error = RegState.UNREGISTERED, 0, reason
        other = self.on_failure(reason, status, retry_after, now) if self.on_failure else None
        if other is not None:  # another server: at once, no backoff (that is for all failing)
            self.server_addr, self.challenge, retry = other, None, 0.0
        else:
            retry = spread(self.backoff, RETRY_SPREAD, self.rand)
            self.backoff = min(self.backoff * 2, self.config.retry_max)
        self._refresh_at = now + retry
        self._keepalive_at = None
        if was_registered:
            self._stack.counters["registrations_lost"] += 1
        self._stack.emit(RegistrationFailed(reason, status, retry))

    # ------------------------------------------------------------------ keep-alive
    def _arm_keepalive(self, now: float) -> None:
        if self.config.keepalive != "off" and self.config.keepalive_interval > 0:
            self._keepalive_at = now + spread(self.config.keepalive_interval,
                                              KEEPALIVE_SPREAD, self.rand)

    def _keepalive(self, now: float) -> None:
        stack = self._stack
        if self.config.keepalive == "crlf" or stack.transport.reliable:
            stack.send_raw(b"\r\n\r\n", self.server_addr)
        elif self._keepalive_tx is None or self._keepalive_tx.terminated:
            host, port = self.server_addr
            uri = f"sip:{self.config.aor_domain}:{port}"
            req = stack.new_request("OPTIONS", uri, f"<{self.aor}>;tag={stack.token(6)}",
                                    f"<{uri}>", stack.token(12), 1, user=self.config.username)
            self._keepalive_tx = stack.start_client(req, self.server_addr, now, ignore_response,
                                                    self._on_keepalive_timeout)
        self._arm_keepalive(now)

    def _on_keepalive_timeout(self, tx: ClientTransaction, now: float) -> None:
        if self.state is RegState.REGISTERED and tx.dest == self.server_addr:
            self._failed(f"server {fmt_addr(self.server_addr)} stopped answering keep-alives",
                         None, now)




def _retry_after(value: str | None) -> int | None:
    """The seconds of a Retry-After (RFC 3261 §20.33: ``18000;duration=3600 (comment)``),
    at most a day; None when absent or unreadable."""
    head = (value or "").strip().split(";", 1)[0].split("(", 1)[0].strip()
    return uint_or_none(head, 86400) if head else None
