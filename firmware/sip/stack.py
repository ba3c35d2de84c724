"""What a registration or a call may ask of the user agent that carries it (libre's ``sip``).

Owns the user agent's configuration (``UAConfig``) and the ``Stack`` protocol: the narrow set of
services ``registration.py`` and ``call.py`` use — build a request or response with our Via and
Contact, start a client transaction, send, emit an event, count. The parts are typed against this
protocol, not against ``UserAgent``, so neither knows the facade, its transaction tables or the
other part. Knows nothing about sockets, clocks, media or GPIO.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..events import SipEvent
from .auth import Challenge, best_challenge
from .budget import BudgetLimits
from .errors import RemoteProtocolError
from .message import DEFAULT_MAX_MESSAGE, Request, Response
from .transaction import Addr, ClientTransaction, TimerConfig
from .transport import Transport

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
# Challenges answered per REGISTER attempt (an INVITE gets one more: registrar and proxy): the
# first one plus renewals of a stale nonce (RFC 7616 §3.3). A server that answers every request
# stale=true is a failure, not a request storm.
MAX_AUTH_ANSWERS = 3

OnResponse = Callable[[Response, ClientTransaction, float], None]
OnTimeout = Callable[[ClientTransaction, float], None]


@dataclass(frozen=True)
class UAConfig:
    server: str
    username: str
    password: str = field(default="", repr=False)
    port: int = 5060
    transport: str = "udp"
    auth_username: str | None = None
    display_name: str | None = None
    domain: str | None = None
    register: bool = True
    register_expires: int = 300
    timers: TimerConfig = field(default_factory=TimerConfig)
    keepalive: str = "options"  # options | crlf | off
    keepalive_interval: float = 30.0
    retry_min: float = 2.0
    retry_max: float = 60.0
    ring_timeout: float = 30.0
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    dtmf_payload_type: int = 101
    srtp: str = "off"  # media.srtp: what an incoming offer must carry before the box rings
    user_agent: str = "intercom-firmware"  # no version: strangers learn nothing to target
    max_message_size: int = DEFAULT_MAX_MESSAGE  # larger requests: 513 (strangers: nothing)
    rewrite_contact: bool = True  # follow received/rport (RFC 3581) into our Contact
    trusted_sources: tuple[str, ...] = ()  # addresses/CIDRs trusted besides the registrar
    untrusted_policy: str = "drop"  # drop | 403 (see firmware/sip/trust.py)
    max_transactions: int = 4096  # open server transactions; beyond: 503, counted
    budget: BudgetLimits = field(default_factory=BudgetLimits)  # their bytes, per source
    min_se: int = 90  # RFC 4028 Min-SE: shortest session interval we accept (the RFC's floor)
    registrar_uri: str | None = None  # REGISTER's Request-URI; None: sip:<domain>[:port]
    outbound_proxy: str | None = None  # RFC 3261 §8.1.2: its URI (";lr") as the first Route

    @property
    def aor_domain(self) -> str:
        return self.domain or self.server


class Stack(Protocol):
    """The services of the user agent a registration or a call relies on."""

    config: UAConfig
    counters: Counter[str]
    contact_addr: Addr  # where the registrar reaches us (rewritten from received/rport)
    transport: Transport
    transport_reason: str | None  # why a transaction is being aborted right now, if known

    def token(self, nbytes: int) -> str: ...

    def emit(self, event: SipEvent) -> None: ...

    def send(self, msg: Request | Response, addr: Addr) -> None: ...

    def send_raw(self, data: bytes, addr: Addr) -> None: ...

    def via(self) -> str: ...

    def contact(self, user: str | None = None) -> str: ...

    def new_request(self, method: str, uri: str, from_: str, to: str, call_id: str,
                    cseq: int, user: str | None = None) -> Request: ...

    def response(self, req: Request, status: int, *, to_tag: str | None = None,
                 body: bytes = b"", extra: list[tuple[str, str]] | None = None) -> Response: ...

    def start_client(self, req: Request, dest: Addr, now: float, on_response: OnResponse,
                     on_timeout: OnTimeout) -> ClientTransaction: ...


def challenge_of(resp: Response) -> Challenge | None:
    """The best digest challenge of a 401/407 (None when none is usable)."""
    proxy = resp.status == 407
    values = resp.headers.raw_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
    try:
        return best_challenge(values, proxy)
    except RemoteProtocolError:
        return None


def fmt_addr(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


def ignore_response(resp: Response, tx: ClientTransaction, now: float) -> None:
    """Responses whose content does not matter (CANCEL, OPTIONS keep-alive)."""


def ignore_timeout(tx: ClientTransaction, now: float) -> None:
    """Timeouts that need no action (CANCEL, BYE after the call already ended)."""
