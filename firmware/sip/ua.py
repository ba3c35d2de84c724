"""The intercom's SIP user agent: a sans-I/O facade in the style of aioquic/h11.

Owns registration (refresh, 423, backoff, un-REGISTER), keep-alive, the one call the box
carries (outgoing with CANCEL races, incoming with 180/200/486/487/488/603), in-dialog
requests (BYE, re-INVITE, INFO, OPTIONS) and the answers to everything else. Whatever comes
from a source that is neither the registrar nor a trusted source (``sip/trust.py``) is refused
before it is parsed; transactions are kept in tables indexed by key and by deadline. Input:
``receive_datagram(data, addr, now)``, ``handle_timer(now)``, ``transport_error(addr, now)``;
output: ``datagrams_to_send()``, ``next_event()``, ``get_timer()``. Knows nothing about
sockets, asyncio, clocks, media or GPIO.
"""

from __future__ import annotations

import heapq
import itertools
import re
import secrets
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    DtmfReceived,
    IncomingCall,
    MediaParams,
    MediaUpdated,
    Registered,
    RegistrationFailed,
    SipEvent,
    SourceRefused,
    Unregistered,
)
from .auth import Challenge, DigestClient, best_challenge
from .dialog import Dialog
from .errors import LocalProtocolError, RemoteProtocolError
from .headers import NameAddr, Via, parse_uint, parse_via, quote, uint_or_none
from .message import (
    MAX_MESSAGE_SIZE,
    REASONS,
    MalformedMessageError,
    Request,
    Response,
    parse_message,
    validate_request,
)
from .sdp import LocalMedia, accept_answer, answer_offer, build_offer, parse_sdp
from .transaction import (
    MAGIC_COOKIE,
    Addr,
    ClientTransaction,
    ServerTransaction,
    TimerConfig,
    client_key,
    server_key,
)
from .transaction import State as TxState
from .transport import transport as transport_named
from .trust import SourceTrust
from .uri import SipUri, parse_uri

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
_KNOWN_NOT_ALLOWED = {"REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER",
                      "PRACK", "UPDATE"}
# Challenges answered per REGISTER attempt (an INVITE gets one more: registrar and proxy): the
# first one plus renewals of a stale nonce (RFC 7616 §3.3). A server that answers every request
# stale=true is a failure, not a request storm.
_MAX_AUTH_ANSWERS = 3
DTMF_DIGITS = "0123456789*#ABCD"
_METHOD = re.compile(rb"^([A-Za-z]{1,16}) ")


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
    max_message_size: int = MAX_MESSAGE_SIZE
    rewrite_contact: bool = True  # follow received/rport (RFC 3581) into our Contact
    trusted_sources: tuple[str, ...] = ()  # addresses/CIDRs trusted besides the registrar
    untrusted_policy: str = "drop"  # drop | 403 (see firmware/sip/trust.py)
    max_transactions: int = 4096  # open server transactions; beyond: 503, counted

    @property
    def aor_domain(self) -> str:
        return self.domain or self.server


@dataclass
class _Registration:
    call_id: str
    from_tag: str
    cseq: int = 0
    state: str = "unregistered"  # unregistered | registering | registered | unregistering
    expires: int = 300
    granted: int = 0
    backoff: float = 0.0
    auth_tries: int = 0
    challenge: Challenge | None = None
    last_error: str | None = None


@dataclass
class Call:
    """The one call the box carries. ``state``: calling, ringing, early, confirmed, ended."""

    call_id: str
    outgoing: bool
    remote: str
    display: str | None
    local_media: LocalMedia | None
    invite: Request
    state: str = "calling"
    invite_tx: ClientTransaction | ServerTransaction | None = None
    dialog: Dialog | None = None
    local_tag: str = ""
    media: MediaParams | None = None
    offer_body: bytes = b""  # the remote offer (incoming) or our offer (outgoing)
    provisional: bool = False
    cancel_wanted: bool = False
    cancel_sent: bool = False
    challenges: list[Challenge] = field(default_factory=list)
    auth_answers: int = 0  # INVITEs re-sent with credentials, stale renewals included
    redirected: bool = False
    answered_at: float | None = None
    last_sdp: bytes = b""
    ack: Request | None = None


class UserAgent:
    """Sans-I/O SIP user agent for one registration and one call at a time."""

    def __init__(self, config: UAConfig, local_addr: Addr,
                 token: Callable[[int], str] = secrets.token_hex) -> None:
        self.config = config
        self.local_addr = local_addr
        self.contact_addr = local_addr
        self.server_addr: Addr = (config.server, config.port)
        self.transport = transport_named(config.transport)
        self.reliable = self.transport.reliable
        self._token = token
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque[SipEvent] = deque()
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._server: dict[tuple[str, ...], ServerTransaction] = {}
        # every transaction deadline, indexed: (deadline, tie-break, transaction); entries
        # whose deadline the transaction no longer holds are skipped when they come up
        self._deadlines: list[tuple[float, int, ClientTransaction | ServerTransaction]] = []
        self._tie = itertools.count()
        self._timers: dict[str, float] = {}
        self.trust = SourceTrust((config.server,), config.trusted_sources,
                                 config.untrusted_policy)
        self._auth = DigestClient(config.auth_username or config.username, config.password)
        self.reg = _Registration(call_id=self._token(12), from_tag=self._token(6),
                                 expires=config.register_expires, backoff=config.retry_min)
        self.call: Call | None = None
        self.counters: Counter[str] = Counter()
        self._transport_reason: str | None = None
        self._cseq = 0

    # ------------------------------------------------------------------ facade
    @property
    def registered(self) -> bool:
        return self.reg.state == "registered" or (
            self.reg.state == "registering" and self.reg.granted > 0)

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> SipEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        heap = self._deadlines
        while heap and not _pending(heap[0]):
            _, _, tx = heapq.heappop(heap)
            if tx.terminated:
                self._forget(tx)
        deadlines = list(self._timers.values())
        if heap:
            deadlines.append(heap[0][0])
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            tx = entry[2]
            if _pending(entry):
                tx.handle_timer(now)
            if tx.terminated:
                self._forget(tx)
        for name, deadline in sorted(self._timers.items(), key=lambda kv: kv[1]):
            if deadline <= now and self._timers.get(name) == deadline:
                del self._timers[name]
                try:
                    getattr(self, f"_on_{name}")(now)
                except RemoteProtocolError:  # a stored header turned out unusable
                    self.counters["timer_errors"] += 1

    def set_registrar_addresses(self, addresses: list[str]) -> None:
        """Every address the registrar's name resolves to (the application resolves it at
        start and at each registration). The address we send to stays trusted."""
        self.trust.set_registrar([*addresses, self.server_addr[0]])

    def start(self, now: float) -> None:
        if self.config.register:
            self._send_register(now)
        self._arm_keepalive(now)

    def shutdown(self, now: float) -> None:
        """Hang up any call and remove our binding (un-REGISTER)."""
        if self.call and self.call.state != "ended":
            self.hangup(now)
        self._timers.pop("register", None)
        if self.reg.state in ("registered", "registering") and self.config.register:
            self.reg.state = "unregistering"
            self._send_register(now, expires=0)
        self._timers.pop("keepalive", None)

    def transport_error(self, addr: Addr, now: float, reason: str = "unreachable") -> None:
        """The transport could not reach ``addr`` (ICMP error, a stream that cannot be opened,
        a TLS certificate that does not verify); ``reason`` becomes the registration error."""
        self.counters["transport_errors"] += 1
        self._transport_reason = reason
        for tx in list(self._client.values()):
            if tx.dest == addr:
                tx.abort(now)
                self._forget(tx)
        self._transport_reason = None

    def connection_lost(self, now: float, reason: str) -> None:
        """The stream to the registrar closed: it can no longer reach us (we listen on no
        port), so the registration is gone until we reconnect and register again."""
        self.transport_error(self.server_addr, now, reason)
        if self.config.register and self.reg.state in ("registered", "registering"):
            self._registration_failed(f"connection to the registrar lost: {reason}", None, now)

    def transport_restored(self, now: float) -> None:
        """A stream transport reconnected (new local port): register again at once so that
        the registrar reaches us over the new connection."""
        if self.config.register and self.reg.state != "unregistering":
            self._timers.pop("register", None)
            self.reg.auth_tries = 0
            self._send_register(now)

    # ------------------------------------------------------------------ input
    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """One datagram (or one framed stream message) from ``addr``.

        Raises nothing for anything the peer sends: malformed input is answered or counted."""
        if not self.trust.trusted(addr):
            self._refuse(data, addr, now)
            return
        if not data.strip(b"\r\n"):
            if data == b"\r\n\r\n" and not self.reliable:
                self._out.append((b"\r\n", addr))  # RFC 5626 §4.4.1 pong
            self.counters["keepalives_received"] += 1
            return
        try:
            msg = parse_message(data, max_size=self.config.max_message_size)
        except MalformedMessageError as exc:
            self._reject_malformed(exc, addr)
            return
        try:
            if isinstance(msg, Request):
                self._receive_request(msg, addr, now)
            else:
                self._receive_response(msg, now)
        except RemoteProtocolError as exc:
            # a header the handler needed was malformed: answer if we can, else drop
            self.counters["dropped_malformed"] += 1
            if isinstance(msg, Request) and msg.method != "ACK":
                self._reply_stateless(msg, addr, exc.status, exc.reason)

    def _refuse(self, data: bytes, addr: Addr, now: float) -> None:
        """A stranger: nothing it sent is parsed beyond its first word. With ``drop`` nothing
        is sent back; with ``403`` a stateless refusal no larger than what it sent."""
        if data.startswith(b"SIP/"):
            what = "response"
        elif (m := _METHOD.match(data)) is not None:
            what = m.group(1).decode("ascii").upper()
        else:
            what = "other"
        if self.trust.policy == "403" and what not in ("response", "ACK", "other"):
            self.counters["untrusted_refused"] += 1
            self._refuse_403(data, addr)
        else:
            self.counters["untrusted_dropped"] += 1
        if (count := self.trust.report(addr, now)) is not None:
            self._events.append(SourceRefused(addr[0], addr[1], what, count, self.trust.policy))

    def _refuse_403(self, data: bytes, addr: Addr) -> None:
        try:
            req = parse_message(data, max_size=self.config.max_message_size)
            if not isinstance(req, Request):
                return
            validate_request(req)
            resp = Response(status=403, reason="Forbidden")
            for via in req.headers.get_all("Via"):
                resp.headers.add("Via", via)
            for name in ("From", "To", "Call-ID", "CSeq"):
                resp.headers.add(name, req.headers.get(name) or "")
            reply = resp.to_bytes()
        except RemoteProtocolError:
            return
        if len(reply) <= len(data):  # never a reflection amplifier
            self._out.append((reply, addr))

    # ------------------------------------------------------------------ actions
    def call_target(self, target: str) -> str:
        """Turn an extension ("5001") or URI into a Request-URI on our server."""
        if ":" in target:
            uri = parse_uri(target)
            return str(uri)
        return f"sip:{target}@{self.config.aor_domain}"

    def make_call(self, target: str, media: LocalMedia, now: float) -> str:
        if self.call and self.call.state != "ended":
            raise LocalProtocolError("a call is already in progress")
        uri = self.call_target(target)
        call_id = self._token(12)
        local = NameAddr(self._aor(), self.config.display_name, {"tag": self._token(6)})
        req = self._new_request("INVITE", uri, str(local), f"<{uri}>", call_id, 1)
        offer = build_offer(media).to_bytes()
        req.headers.add("Content-Type", "application/sdp")
        req.body = offer
        self.call = Call(call_id, True, uri, None, media, req, offer_body=offer,
                         local_tag=local.tag or "", last_sdp=offer)
        self._send_invite(req, now)
        self._timers["ring"] = now + self.config.ring_timeout
        return call_id

    def answer(self, media: LocalMedia, now: float) -> None:
        call = self._current("ringing")
        if not call.offer_body:  # late offer: we offer in the 200, the ACK carries the answer
            body = build_offer(media).to_bytes()
        else:
            try:
                sd, params = answer_offer(parse_sdp(call.offer_body), media)
            except RemoteProtocolError as exc:
                self.reject(exc.status, now)
                return
            body, call.media = sd.to_bytes(), params
        call.local_media, call.last_sdp = media, body
        resp = self._response(call.invite, 200, to_tag=call.local_tag, body=body)
        assert isinstance(call.invite_tx, ServerTransaction)
        call.invite_tx.respond(resp, now)
        call.state, call.answered_at = "confirmed", now
        self._timers.pop("ring", None)
        self._events.append(CallAnswered(call.call_id, call.media))

    def reject(self, status: int, now: float) -> None:
        call = self._current("ringing")
        assert isinstance(call.invite_tx, ServerTransaction)
        try:
            call.invite_tx.respond(self._response(call.invite, status, to_tag=call.local_tag),
                                   now)
        except RemoteProtocolError:
            self.counters["responses_unbuildable"] += 1
        self._end(call, f"rejected ({status} {REASONS.get(status, '')})", status, False)

    def hangup(self, now: float) -> None:
        """End the call. Locally it always ends, even when no BYE/CANCEL can be built."""
        call = self.call
        if call is None or call.state == "ended":
            raise LocalProtocolError("no call to hang up")
        if not call.outgoing and call.state == "ringing":
            self.reject(603, now)
        elif call.state == "confirmed":
            self._send_bye(call, now)
            self._end(call, "local hangup", None, False)
        else:
            call.cancel_wanted = True
            if call.provisional:
                self._send_cancel(call, now)
            self._timers["cancel_guard"] = now + 64 * self.config.timers.t1

    # ------------------------------------------------------------------ requests out
    def _aor(self) -> SipUri:
        return SipUri(host=self.config.aor_domain, user=self.config.username)

    def _hostport(self) -> str:
        """Our address; port 0 (a stream transport not connected yet) is left out."""
        host, port = self.contact_addr
        return f"{host}:{port}" if port else host

    def _contact(self) -> str:
        param = self.transport.uri_param
        params = f";transport={param}" if param else ""
        return f"<sip:{self.config.username}@{self._hostport()}{params}>"

    def _via(self) -> str:
        return f"SIP/2.0/{self.transport.via} {self._hostport()};rport;branch=" \
               f"{MAGIC_COOKIE}{self._token(10)}"

    def _new_request(self, method: str, uri: str, from_: str, to: str, call_id: str,
                     cseq: int) -> Request:
        req = Request(method=method, uri=uri)
        req.headers.add("Via", self._via())
        req.headers.add("Max-Forwards", "70")
        req.headers.add("From", from_)
        req.headers.add("To", to)
        req.headers.add("Call-ID", call_id)
        req.headers.add("CSeq", f"{cseq} {method}")
        req.headers.add("Contact", self._contact())
        req.headers.add("User-Agent", self.config.user_agent)
        if method in ("INVITE", "REGISTER", "OPTIONS"):
            req.headers.add("Allow", ALLOW)
        return req

    def _send(self, msg: Request | Response, addr: Addr) -> None:
        self._out.append((msg.to_bytes(), addr))

    def _start_client(self, req: Request, now: float,
                      on_response: Callable[[Response, ClientTransaction, float], None],
                      on_timeout: Callable[[ClientTransaction, float], None]
                      ) -> ClientTransaction:
        tx = ClientTransaction(req, self.server_addr, self.config.timers, self.reliable,
                               self._send, on_response, on_timeout, now,
                               scheduled=self._schedule)
        self._client[tx.key] = tx
        return tx

    def _new_server(self, req: Request, addr: Addr) -> ServerTransaction:
        tx = ServerTransaction(req, addr, self.config.timers, self.reliable, self._send,
                               self._on_server_timeout, scheduled=self._schedule)
        self._server[tx.key] = tx
        return tx

    def _schedule(self, tx: object, deadline: float) -> None:
        assert isinstance(tx, ClientTransaction | ServerTransaction)
        heapq.heappush(self._deadlines, (deadline, next(self._tie), tx))

    def _forget(self, tx: ClientTransaction | ServerTransaction) -> None:
        store: dict = self._client if isinstance(tx, ClientTransaction) else self._server
        if store.get(tx.key) is tx:
            del store[tx.key]

    @property
    def open_transactions(self) -> int:
        return len(self._client) + len(self._server)

    # ------------------------------------------------------------------ registration
    def _send_register(self, now: float, expires: int | None = None) -> None:
        reg = self.reg
        reg.cseq += 1
        aor = str(self._aor())
        uri = f"sip:{self.config.aor_domain}"
        if self.config.port != self.transport.default_port:
            uri += f":{self.config.port}"
        req = self._new_request("REGISTER", uri, f"<{aor}>;tag={reg.from_tag}", f"<{aor}>",
                                reg.call_id, reg.cseq)
        req.headers.add("Expires", str(reg.expires if expires is None else expires))
        if reg.challenge is not None:
            name, value = self._auth.authorization(reg.challenge, "REGISTER", uri)
            req.headers.add(name, value)
        if reg.state != "unregistering":
            reg.state = "registering" if reg.state != "registered" else reg.state
        self._start_client(req, now, self._on_register_response, self._on_register_timeout)

    def _on_register_response(self, resp: Response, tx: ClientTransaction, now: float) -> None:
        try:
            self._register_response(resp, now)
        except RemoteProtocolError as exc:
            # never leave the registration half-updated with no refresh timer armed
            self.counters["dropped_malformed"] += 1
            if self.reg.state == "unregistering":
                self.reg.state, self.reg.granted = "unregistered", 0
                self._events.append(Unregistered("unusable answer to un-REGISTER"))
                return
            self._registration_failed(
                f"unusable answer from the registrar: {exc.reason}", resp.status, now)

    def _register_response(self, resp: Response, now: float) -> None:
        reg = self.reg
        if resp.status < 200:
            return
        unregistering = reg.state == "unregistering"
        if resp.status in (401, 407):
            challenge = self._challenge(resp)
            if challenge is not None and (reg.auth_tries == 0 or (
                    challenge.stale and reg.auth_tries < _MAX_AUTH_ANSWERS)):
                reg.auth_tries += 1
                reg.challenge = challenge
                self._send_register(now, expires=0 if unregistering else None)
                return
        elif resp.status == 423 and not unregistering:
            minimum = uint_or_none(resp.headers.get("Min-Expires"), 86400)
            if minimum is not None and minimum > reg.expires:
                reg.expires = minimum
                self._send_register(now)
                return
        reg.auth_tries = 0
        if unregistering:
            reg.state, reg.granted = "unregistered", 0
            self._events.append(Unregistered("shutdown"))
            return
        if 200 <= resp.status < 300:
            self._registered(resp, now)
        else:
            hint = " — check sip.username / sip.password" if resp.status in (401, 403, 407) \
                else ""
            self._registration_failed(
                f"registration rejected: {resp.status} {resp.reason} from "
                f"{self._fmt(self.server_addr)}{hint}", resp.status, now)

    def _on_register_timeout(self, tx: ClientTransaction, now: float) -> None:
        if self.reg.state == "unregistering":
            self.reg.state = "unregistered"
            self._events.append(Unregistered("no answer to un-REGISTER"))
            return
        why = self._transport_reason or f"no response from {self._fmt(self.server_addr)}"
        self._registration_failed(f"registration failed: {why}", None, now)

    def _registered(self, resp: Response, now: float) -> None:
        reg = self.reg
        granted = self._granted_expires(resp)
        if self._learn_public_address(resp):
            reg.state, reg.granted = "registering", 0
            self._send_register(now)
            return
        reg.state, reg.granted, reg.last_error = "registered", granted, None
        reg.backoff = self.config.retry_min
        refresh = granted * 0.5 if granted < 60 else granted - 30
        self._timers["register"] = now + max(refresh, 1.0)
        self._arm_keepalive(now)
        self._events.append(Registered(granted, self._contact()))

    def _granted_expires(self, resp: Response) -> int:
        host, port = self.contact_addr
        for na in resp.contacts:
            uri = na.uri
            if isinstance(uri, SipUri) and uri.user == self.config.username and \
                    uri.host == host.lower() and (uri.port or 5060) == port:
                if na.params.get("expires"):
                    return parse_uint(na.params["expires"] or "", "expires", 2**32 - 1)
        header = uint_or_none(resp.headers.get("Expires"), 2**32 - 1)
        return self.reg.expires if header is None else header

    def _learn_public_address(self, resp: Response) -> bool:
        """RFC 3581: the server saw us at received:rport. True when our Contact must change."""
        if not self.config.rewrite_contact or self.reliable:
            return False
        via = resp.top_via
        host = via.params.get("received") or self.contact_addr[0]
        port = uint_or_none(via.params.get("rport"), 65535) or self.contact_addr[1]
        if host != self.contact_addr[0] and not _is_ip(host):
            host = self.contact_addr[0]  # only an address may go into our Contact
        if (host, port) != self.contact_addr:
            self.contact_addr = (host, port)
            self.counters["contact_rewrites"] += 1
            return True
        return False

    def _registration_failed(self, reason: str, status: int | None, now: float) -> None:
        reg = self.reg
        was_registered = reg.state == "registered"
        reg.state, reg.granted, reg.last_error = "unregistered", 0, reason
        retry = reg.backoff
        reg.backoff = min(reg.backoff * 2, self.config.retry_max)
        self._timers["register"] = now + retry
        self._timers.pop("keepalive", None)
        if was_registered:
            self.counters["registrations_lost"] += 1
        self._events.append(RegistrationFailed(reason, status, retry))

    def _on_register(self, now: float) -> None:
        self.reg.auth_tries = 0
        self._send_register(now)

    # ------------------------------------------------------------------ keep-alive
    def _arm_keepalive(self, now: float) -> None:
        if self.config.keepalive != "off" and self.config.keepalive_interval > 0:
            self._timers["keepalive"] = now + self.config.keepalive_interval

    def _on_keepalive(self, now: float) -> None:
        if self.config.keepalive == "crlf" or self.reliable:
            self._out.append((b"\r\n\r\n", self.server_addr))
        elif not any(tx.request.method == "OPTIONS" for tx in self._client.values()):
            uri = f"sip:{self.config.aor_domain}:{self.config.port}"
            req = self._new_request("OPTIONS", uri, f"<{self._aor()}>;tag={self._token(6)}",
                                    f"<{uri}>", self._token(12), 1)
            self._start_client(req, now, _ignore_response, self._on_keepalive_timeout)
        self._arm_keepalive(now)

    def _on_keepalive_timeout(self, tx: ClientTransaction, now: float) -> None:
        if self.reg.state == "registered":
            self._registration_failed(
                f"server {self._fmt(self.server_addr)} stopped answering keep-alives", None,
                now)

    # ------------------------------------------------------------------ outgoing call
    def _send_invite(self, req: Request, now: float) -> None:
        call = self.call
        assert call is not None
        call.invite = req
        call.invite_tx = self._start_client(req, now, self._on_invite_response,
                                            self._on_invite_timeout)

    def _on_invite_response(self, resp: Response, tx: ClientTransaction, now: float) -> None:
        call = self.call
        if call is None or call.call_id != resp.call_id:
            return
        try:
            self._invite_response(call, resp, now)
        except RemoteProtocolError as exc:
            self.counters["dropped_malformed"] += 1
            if resp.status >= 200 and call.state != "ended":
                if call.dialog is not None:
                    self._send_bye(call, now)
                self._end(call, f"unusable {resp.status} response: {exc.reason}", None, True)

    def _invite_response(self, call: Call, resp: Response, now: float) -> None:
        if resp.status < 200:
            call.provisional = True  # any 1xx, 100 included, allows CANCEL (§9.1)
            if resp.status > 100 and call.state == "calling":
                call.state = "ringing"
                self._events.append(CallRinging(call.call_id, resp.status))
            if call.cancel_wanted and not call.cancel_sent:
                self._send_cancel(call, now)
            return
        if resp.status < 300:
            self._on_invite_2xx(call, resp, now)
            return
        if resp.status in (401, 407) and not call.cancel_wanted and \
                self._answer_invite_challenge(call, resp, now):
            return
        if 300 <= resp.status < 400 and not call.cancel_wanted and self._follow(call, resp, now):
            return
        if call.state == "ended":
            return
        if resp.status == 487 and call.cancel_wanted:
            self._end(call, "cancelled", 487, False)
        else:
            self._end(call, f"{resp.status} {resp.reason}", resp.status, True)

    def _follow(self, call: Call, resp: Response, now: float) -> bool:
        """Follow a redirect (3xx) once, to its first SIP Contact (RFC 3261 §8.1.3.4)."""
        targets = [c.uri for c in resp.contacts if isinstance(c.uri, SipUri)]
        if call.redirected or not targets:
            return False
        call.redirected = True
        old = call.invite
        uri = str(targets[0].without_headers())
        req = self._new_request("INVITE", uri, old.headers.get("From") or "",
                                old.headers.get("To") or "", call.call_id, old.cseq.number + 1)
        req.headers.add("Content-Type", "application/sdp")
        req.body = old.body
        call.remote, call.provisional = uri, False
        self._send_invite(req, now)
        return True

    def _answer_invite_challenge(self, call: Call, resp: Response, now: float) -> bool:
        """Re-send the INVITE with credentials. A registrar's 401 followed by a proxy's 407
        is answered; the same realm challenging twice (wrong password) is not."""
        challenge = self._challenge(resp)
        if challenge is None:
            return False
        same = [c for c in call.challenges
                if (c.proxy, c.realm) == (challenge.proxy, challenge.realm)]
        if (same and not challenge.stale) or len(call.challenges) >= 4 or \
                call.auth_answers >= _MAX_AUTH_ANSWERS + 1:  # one more: registrar and proxy
            return False
        call.auth_answers += 1
        call.challenges = [c for c in call.challenges if c not in same] + [challenge]
        old = call.invite
        req = self._new_request("INVITE", old.uri, old.headers.get("From") or "",
                                old.headers.get("To") or "", call.call_id, old.cseq.number + 1)
        req.headers.add("Content-Type", "application/sdp")
        req.body = old.body
        for ch in call.challenges:
            req.headers.add(*self._auth.authorization(ch, "INVITE", old.uri))
        call.provisional = False
        self._send_invite(req, now)
        return True

    def _on_invite_2xx(self, call: Call, resp: Response, now: float) -> None:
        if call.dialog is not None:  # retransmitted 2xx: our ACK was lost
            if call.ack is not None:
                self._send(call.ack, self.server_addr)
            return
        call.dialog = Dialog.from_uac(call.invite, resp)
        ack = call.dialog.create_request("ACK", cseq=call.invite.cseq.number)
        ack.headers.add("Via", self._via())
        for name in ("Authorization", "Proxy-Authorization"):
            if (value := call.invite.headers.get(name)) is not None:
                ack.headers.add(name, value)
        call.ack = ack
        self._send(ack, self.server_addr)
        self._timers.pop("ring", None)
        self._timers.pop("cancel_guard", None)
        if call.cancel_wanted or call.state == "ended":
            self._send_bye(call, now)  # 200 raced our CANCEL (§9.1): end it with BYE
            if call.state != "ended":
                self._end(call, "cancelled", None, False)
            return
        try:
            call.media = accept_answer(parse_sdp(resp.body), call.local_media) \
                if resp.body and call.local_media else None
        except RemoteProtocolError as exc:
            self._send_bye(call, now)
            self._end(call, f"unusable SDP answer: {exc.reason}", None, False)
            return
        call.state, call.answered_at = "confirmed", now
        self._events.append(CallAnswered(call.call_id, call.media))

    def _on_invite_timeout(self, tx: ClientTransaction, now: float) -> None:
        call = self.call
        if call and call.invite_tx is tx and call.state != "ended":
            self._end(call, "no response to INVITE (timeout)", 408, True)

    def _send_cancel(self, call: Call, now: float) -> None:
        inv = call.invite
        req = Request(method="CANCEL", uri=inv.uri)
        req.headers.add("Via", inv.headers.get_all("Via")[0])
        for route in inv.headers.raw_all("Route"):
            req.headers.add("Route", route)
        req.headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            req.headers.add(name, inv.headers.get(name) or "")
        req.headers.add("CSeq", f"{inv.cseq.number} CANCEL")
        req.headers.add("User-Agent", self.config.user_agent)
        call.cancel_sent = True
        self._start_client(req, now, _ignore_response, _ignore_timeout)

    def _on_ring(self, now: float) -> None:
        call = self.call
        if call is None or call.state not in ("calling", "ringing"):
            return
        if call.outgoing:
            self.hangup(now)
            call.cancel_wanted = True
            self._end(call, "no answer", None, False)
        else:
            assert isinstance(call.invite_tx, ServerTransaction)
            call.invite_tx.respond(self._response(call.invite, 480, to_tag=call.local_tag), now)
            self._end(call, "not answered", 480, False)

    def _on_cancel_guard(self, now: float) -> None:
        call = self.call
        if call and call.state != "ended":
            self._end(call, "cancelled (no final response)", None, False)

    # ------------------------------------------------------------------ in-dialog requests out
    def _send_bye(self, call: Call, now: float, challenge: Challenge | None = None) -> None:
        """Send BYE if one can be built; never raises (the caller ends the call anyway)."""
        dialog = call.dialog
        if dialog is None:
            return
        try:
            bye = dialog.create_request("BYE")
            bye.headers.add("Via", self._via())
            bye.headers.add("User-Agent", self.config.user_agent)
            if challenge is not None:
                bye.headers.add(*self._auth.authorization(challenge, "BYE", bye.uri))
        except RemoteProtocolError:
            self.counters["bye_unsendable"] += 1
            return

        def on_response(resp: Response, tx: ClientTransaction, now: float) -> None:
            if resp.status in (401, 407) and challenge is None:
                if (again := self._challenge(resp)) is not None:
                    self._send_bye(call, now, again)

        self._start_client(bye, now, on_response, _ignore_timeout)

    # ------------------------------------------------------------------ requests in
    def _receive_request(self, req: Request, addr: Addr, now: float) -> None:
        try:
            validate_request(req)
        except RemoteProtocolError as exc:
            self.counters["rejected_invalid"] += 1
            if req.method != "ACK":
                self._reply_stateless(req, addr, exc.status, exc.reason)
            return
        self._stamp_via(req, addr)
        key = server_key(req)
        if (tx := self._server.get(key)) is not None:
            self.counters["retransmissions_received"] += 1
            tx.receive_retransmission(req, now)
            return
        if req.method == "ACK":
            self._receive_ack(req, now)
            return
        if len(self._server) >= self.config.max_transactions:
            self.counters["dropped_overload"] += 1
            self._reply_stateless(req, addr, 503, "too many open transactions")
            return
        if req.method == "CANCEL":
            self._receive_cancel(req, addr, now)
            return
        tx = self._new_server(req, addr)
        try:
            self._new_request_in(req, tx, now)
        except RemoteProtocolError as exc:
            # answer through the transaction so that its timers reap it; never leave it open
            self.counters["dropped_malformed"] += 1
            call = self.call
            if call is None or call.invite_tx is not tx or call.state == "ended":
                if tx.state in (TxState.TRYING, TxState.PROCEEDING):
                    tx.respond(self._response(req, exc.status, to_tag=self._token(6), extra=[
                        ("Warning", f"399 intercom {quote(exc.reason[:120])}")]), now)
                if tx.next_deadline() is None:
                    self._forget(tx)

    def _new_request_in(self, req: Request, tx: ServerTransaction, now: float) -> None:
        status, extra = self._precheck(req)
        if status:
            tx.respond(self._response(req, status, extra=extra, to_tag=self._token(6)), now)
            return
        if req.to.tag:
            self._in_dialog(req, tx, now)
        elif req.method == "INVITE":
            self._incoming_invite(req, tx, now)
        elif req.method == "OPTIONS":
            tx.respond(self._response(req, 200, to_tag=self._token(6),
                                      extra=[("Accept", "application/sdp")]), now)
        else:  # BYE/INFO outside a dialog
            tx.respond(self._response(req, 481, to_tag=self._token(6)), now)

    def _precheck(self, req: Request) -> tuple[int, list[tuple[str, str]]]:
        """Method, URI scheme, Require and body checks of RFC 3261 §8.2 in that order."""
        if req.method in _KNOWN_NOT_ALLOWED:
            return 405, [("Allow", ALLOW)]
        if req.method not in ALLOW.split(", "):
            return 501, [("Allow", ALLOW)]
        if not isinstance(req.parsed_uri, SipUri):
            return 416, []
        required = [r for r in req.headers.get_all("Require") if r]
        if required:
            return 420, [("Unsupported", ", ".join(required))]
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if req.method == "INVITE" and req.body and ctype != "application/sdp":
            return 415, [("Accept", "application/sdp")]
        if req.method == "INVITE":
            accept = [a.split(";")[0].strip().lower() for a in req.headers.get_all("Accept")]
            if accept and "application/sdp" not in accept and "*/*" not in accept:
                return 406, [("Accept", "application/sdp")]
        return 0, []

    def _incoming_invite(self, req: Request, tx: ServerTransaction, now: float) -> None:
        tx.respond(self._response(req, 100), now)
        if self.call and self.call.state != "ended":
            tx.respond(self._response(req, 486, to_tag=self._token(6)), now)
            self.counters["busy_rejections"] += 1
            return
        if req.body:
            try:
                probe = LocalMedia("127.0.0.1", 9, self.config.codecs, srtp=self.config.srtp)
                answer_offer(parse_sdp(req.body), probe)
            except RemoteProtocolError as exc:
                tx.respond(self._response(req, exc.status, to_tag=self._token(6),
                                          extra=[("Warning", f'304 intercom {quote(exc.reason)}')]),
                           now)
                return
        frm = req.from_
        call = Call(req.call_id, False, str(frm.uri), frm.display, None, req, state="ringing",
                    invite_tx=tx, local_tag=self._token(6), offer_body=req.body)
        call.dialog = Dialog.from_uas(req, call.local_tag)
        self.call = call
        tx.respond(self._response(req, 180, to_tag=call.local_tag), now)
        self._timers["ring"] = now + self.config.ring_timeout
        self._events.append(IncomingCall(call.call_id, str(frm.uri), frm.display))

    def _receive_cancel(self, req: Request, addr: Addr, now: float) -> None:
        invite_key = server_key(req)[:-1] + ("INVITE",)
        cancel_tx = self._new_server(req, addr)
        invite_tx = self._server.get(invite_key)
        if invite_tx is None:
            cancel_tx.respond(self._response(req, 481), now)
            return
        cancel_tx.respond(self._response(req, 200, to_tag=self._to_tag_of(invite_tx)), now)
        call = self.call
        if invite_tx.state.value == "proceeding":
            invite_tx.respond(self._response(invite_tx.request, 487,
                                             to_tag=self._to_tag_of(invite_tx)), now)
            if call and call.invite_tx is invite_tx:
                self._end(call, "cancelled by caller", 487, True)

    def _receive_ack(self, req: Request, now: float) -> None:
        call = self.call
        if call is None or call.call_id != req.call_id or call.outgoing:
            self.counters["stray_acks"] += 1
            return
        tx = call.invite_tx
        if isinstance(tx, ServerTransaction):
            tx.ack_2xx(now)
        if call.local_media and call.media is None and call.state != "ended":
            # a late offer (INVITE without SDP): the answer must come in this ACK. Without a
            # usable one (no SDP, no common codec, no SRTP key where media.srtp is required)
            # the call would stand without media: end it (RFC 3264 leaves no other way)
            try:
                if not req.body:
                    raise RemoteProtocolError("the ACK carries no SDP answer")
                call.media = accept_answer(parse_sdp(req.body), call.local_media)
                self._events.append(MediaUpdated(call.call_id, call.media))
            except RemoteProtocolError as exc:
                self.counters["bad_sdp_in_ack"] += 1
                self._send_bye(call, now)
                self._end(call, f"unusable SDP answer in ACK: {exc.reason}", None, False)

    def _in_dialog(self, req: Request, tx: ServerTransaction, now: float) -> None:
        """A request inside the call's dialog; only trusted sources get this far."""
        call = self.call
        dialog = call.dialog if call else None
        if call is None or dialog is None or call.state == "ended" or \
                (req.call_id, req.to.tag, req.from_.tag) != dialog.key:
            tx.respond(self._response(req, 481), now)
            return
        try:
            dialog.receive_request(req)
        except RemoteProtocolError as exc:
            tx.respond(self._response(req, exc.status), now)
            return
        if req.method == "BYE":
            tx.respond(self._response(req, 200), now)
            self._end(call, "remote hangup", None, True)
        elif req.method == "INVITE":
            self._reinvite(call, req, tx, now)
        elif req.method == "INFO":
            digit = _dtmf_from_info(req)
            tx.respond(self._response(req, 200 if digit is not None or not req.body else 415),
                       now)
            if digit is not None:
                self._events.append(DtmfReceived(call.call_id, digit))
        else:  # OPTIONS
            tx.respond(self._response(req, 200, extra=[("Accept", "application/sdp")]), now)

    def _reinvite(self, call: Call, req: Request, tx: ServerTransaction, now: float) -> None:
        if call.state != "confirmed" or call.local_media is None:
            tx.respond(self._response(req, 491), now)
            return
        media = call.local_media
        if req.body:
            try:
                sd, params = answer_offer(parse_sdp(req.body), media)
            except RemoteProtocolError as exc:
                tx.respond(self._response(req, exc.status), now)
                return
            body = sd.to_bytes()
            if body != call.last_sdp:
                media = replace(media, version=media.version + 1)
                sd, params = answer_offer(parse_sdp(req.body), media)
                body = sd.to_bytes()
            call.local_media, call.last_sdp, call.media = media, body, params
            self._events.append(MediaUpdated(call.call_id, params))
        else:
            body = build_offer(media).to_bytes()
            call.media = None
        call.invite, call.invite_tx = req, tx
        tx.respond(self._response(req, 200, body=body), now)

    def _on_server_timeout(self, tx: ServerTransaction, why: str, now: float) -> None:
        call = self.call
        if call and call.invite_tx is tx and why == "no ACK for 2xx" and call.state != "ended":
            self._send_bye(call, now)
            self._end(call, "no ACK from caller", None, True)

    # ------------------------------------------------------------------ responses in
    def _receive_response(self, resp: Response, now: float) -> None:
        vias = resp.vias
        if len(vias) != 1:
            self.counters["responses_misrouted"] += 1  # §8.1.3.3
            return
        tx = self._client.get(client_key(resp))
        if tx is None:
            call = self.call
            if call and call.outgoing and call.ack and resp.cseq.method == "INVITE" and \
                    200 <= resp.status < 300 and resp.call_id == call.call_id:
                self._send(call.ack, self.server_addr)  # 2xx retransmission after Timer M
                return
            self.counters["unmatched_responses"] += 1
            return
        tx.receive(resp, now)

    # ------------------------------------------------------------------ helpers
    def _current(self, state: str) -> Call:
        if self.call is None or self.call.state != state:
            raise LocalProtocolError(f"no call in state {state}")
        return self.call

    def _end(self, call: Call, reason: str, status: int | None, by_remote: bool) -> None:
        if call.state == "ended":
            return
        call.state = "ended"
        self._timers.pop("ring", None)
        self._events.append(CallEnded(call.call_id, reason, status, by_remote))

    def _challenge(self, resp: Response) -> Challenge | None:
        proxy = resp.status == 407
        values = resp.headers.raw_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        try:
            return best_challenge(values, proxy)
        except RemoteProtocolError:
            return None

    def _to_tag_of(self, tx: ServerTransaction) -> str:
        call = self.call
        if call and call.invite_tx is tx:
            return call.local_tag
        return self._token(6)

    def _stamp_via(self, req: Request, addr: Addr) -> None:
        """Add received/rport to the top Via (RFC 3261 §18.2.1, RFC 3581 §4)."""
        vias = req.headers.get_all("Via")
        top = parse_via(vias[0])
        params = dict(top.params)
        if top.host != addr[0]:
            params["received"] = addr[0]
        if "rport" in params:
            params["rport"] = str(addr[1])
        if params != top.params:
            req.headers.remove("Via")
            req.headers.add("Via", str(Via(top.transport, top.host, top.port, params)))
            for via in vias[1:]:
                req.headers.add("Via", via)

    def _response(self, req: Request, status: int, *, to_tag: str | None = None,
                  body: bytes = b"", extra: list[tuple[str, str]] | None = None) -> Response:
        resp = Response(status=status, reason=REASONS.get(status, "Unknown"))
        for via in req.headers.get_all("Via"):
            resp.headers.add("Via", via)
        if status < 300 and req.method == "INVITE":
            for rr in req.headers.raw_all("Record-Route"):
                resp.headers.add("Record-Route", rr)
        resp.headers.add("From", req.headers.get("From") or "")
        to = req.headers.get("To") or ""
        if to_tag and status > 100 and ";tag=" not in to.replace(" ", "").lower():
            to = f"{to};tag={to_tag}"
        resp.headers.add("To", to)
        resp.headers.add("Call-ID", req.headers.get("Call-ID") or "")
        resp.headers.add("CSeq", req.headers.get("CSeq") or "")
        if req.method == "INVITE" and 100 < status < 300:
            resp.headers.add("Contact", self._contact())
        if status == 200 and req.method in ("INVITE", "OPTIONS"):
            resp.headers.add("Allow", ALLOW)
        for name, value in extra or ():
            resp.headers.add(name, value)
        resp.headers.add("Server", self.config.user_agent)
        if body:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = body
        return resp

    def _reply_stateless(self, req: Request, addr: Addr, status: int, reason: str) -> None:
        try:
            resp = self._response(req, status, extra=[("Warning", f"399 intercom {quote(reason)}")])
        except RemoteProtocolError:
            self.counters["dropped_malformed"] += 1
            return
        self._send(resp, addr)

    def _reject_malformed(self, exc: MalformedMessageError, addr: Addr) -> None:
        h = exc.headers
        needed = ("Via", "From", "To", "Call-ID", "CSeq")
        if not exc.is_request or h is None or any(h.get(n) is None for n in needed) or \
                (h.get("CSeq") or "").split()[-1:] == ["ACK"]:
            self.counters["dropped_malformed"] += 1
            return
        self.counters["rejected_malformed"] += 1
        req = Request(method="INVALID", uri="sip:invalid", headers=h)
        self._reply_stateless(req, addr, exc.status, exc.reason)

    @staticmethod
    def _fmt(addr: Addr) -> str:
        return f"{addr[0]}:{addr[1]}"


def _pending(entry: tuple[float, int, ClientTransaction | ServerTransaction]) -> bool:
    """The transaction still holds this deadline (later re-arms push new entries)."""
    deadline, _, tx = entry
    return not tx.terminated and deadline in tx.deadlines.values()


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _dtmf_from_info(req: Request) -> str | None:
    """``application/dtmf-relay`` (Signal=5) or ``application/dtmf`` bodies."""
    ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    text = req.body.decode("utf-8", "replace")
    if ctype == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal" and value.strip():
                return _dtmf_char(value.strip())
    elif ctype == "application/dtmf" and text.strip():
        return _dtmf_char(text.strip())
    return None


def _dtmf_char(value: str) -> str | None:
    """One DTMF key from an INFO body; RFC 4733 event numbers 0-15 are accepted too."""
    if value.isascii() and value.isdigit():
        return DTMF_DIGITS[int(value)] if len(value) <= 2 and int(value) < 16 else None
    char = value[0].upper()
    return char if char in DTMF_DIGITS else None


def _ignore_response(resp: Response, tx: ClientTransaction, now: float) -> None:
    """Responses whose content does not matter (CANCEL, OPTIONS keep-alive)."""


def _ignore_timeout(tx: ClientTransaction, now: float) -> None:
    """Timeouts that need no action (CANCEL, BYE after the call already ended)."""
