"""The intercom's SIP user agent: a slim sans-I/O facade in the style of aioquic/h11.

Owns the transaction tables (by key and by deadline), the trust check on every source, the
routing of what arrives — responses by branch to the transaction that sent the request, requests
by Call-ID/dialog to the ``Call`` (``call.py``), everything else answered statelessly here — and
the aggregation of ``next_deadline()`` / ``handle_timer(now)`` over transactions, registrations
(``registration.py``, one per account) and the call. It implements ``stack.Stack`` for its parts.
It also owns what the box stores for others: requests over ``max_message_size`` are answered 513
from a bounded scan (``message.echo_fields``) and never parsed or stored, open server
transactions are admitted against a byte budget shared per source (``budget.py``; beyond it:
503), and a reply too large for a UDP datagram is never queued.
Input: ``receive_datagram(data, addr, now)``, ``handle_timer(now)``, ``transport_error(addr, now)``,
``datagram_failed(addr, reason)``; output: ``datagrams_to_send()``, ``next_event()``,
``get_timer()``. Knows nothing about sockets, asyncio, clocks, media or GPIO; what it knows of a
transport comes from ``transport.py``'s table.
"""

from __future__ import annotations

import heapq
import itertools
import re
import secrets
from collections import Counter, deque
from collections.abc import Callable

from ..events import BusyRefused, SipEvent, SourceRefused
from .budget import TX_COST, TransactionBudget, message_cost
from .call import DTMF_DIGITS, Call, CallState
from .errors import LocalProtocolError, RemoteProtocolError
from .failover import Failover
from .headers import Headers, Via, parse_via, quote
from .message import (
    MAX_DATAGRAM,
    REASONS,
    MalformedMessageError,
    Request,
    Response,
    Serialized,
    echo_fields,
    echo_reply,
    parse_message,
    validate_request,
)
from .registration import Registration, RegState
from .sdp import LocalMedia
from .stack import ALLOW, OnResponse, OnTimeout, UAConfig
from .targets import Target, TargetSet
from .transaction import (
    MAGIC_COOKIE,
    Addr,
    ClientTransaction,
    ServerTransaction,
    client_key,
    server_key,
)
from .transaction import State as TxState
from .transport import transport as transport_named
from .trust import SourceTrust
from .uri import SipUri, parse_uri

__all__ = ["DTMF_DIGITS", "Call", "CallState", "RegState", "Registration", "UAConfig",
           "UserAgent"]

_KNOWN_NOT_ALLOWED = {"REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER",
                      "PRACK", "UPDATE"}
_METHOD = re.compile(rb"^([A-Za-z]{1,16}) ")
_Tx = ClientTransaction | ServerTransaction


class UserAgent:
    """Sans-I/O SIP user agent: registrations (``reg`` first), one call at a time."""

    def __init__(self, config: UAConfig, local_addr: Addr,
                 token: Callable[[int], str] = secrets.token_hex) -> None:
        self.config = config
        self.local_addr = local_addr
        self.contact_addr = local_addr
        self.transport = transport_named(config.transport)
        self.transport_reason: str | None = None
        self._token = token
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque[SipEvent] = deque()
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._server: dict[tuple[str, ...], ServerTransaction] = {}
        # every transaction deadline, indexed: (deadline, tie-break, transaction); entries
        # whose deadline the transaction no longer holds are skipped when they come up
        self._deadlines: list[tuple[float, int, _Tx]] = []
        self._tie = itertools.count()
        self.trust = SourceTrust((config.server,), config.trusted_sources,
                                 config.untrusted_policy)
        self.counters: Counter[str] = Counter()
        self.budget = TransactionBudget(config.budget)
        self._last_wire: tuple[object, bytes] | None = None  # the last message serialised
        self._stale = 0  # deadline entries of evicted transactions still in the index
        self.reg = Registration(self, config, (config.server, config.port))
        self.registrations: list[Registration] = [self.reg]
        self.failover: Failover | None = None
        self.call: Call | None = None

    # ------------------------------------------------------------------ state
    @property
    def server_addr(self) -> Addr:
        """Where the (first) registration and new calls go: the target in use."""
        return self.reg.server_addr

    @property
    def reliable(self) -> bool:
        return self.transport.reliable

    @property
    def registered(self) -> bool:
        return self.reg.registered

    @property
    def reg_state(self) -> RegState:
        return self.reg.state

    @property
    def call_state(self) -> CallState | None:
        """The state of the current (or last) call; None before the first one."""
        return self.call.state if self.call is not None else None

    @property
    def in_call(self) -> bool:
        return self.call is not None and self.call.active

    @property
    def open_transactions(self) -> int:
        return len(self._client) + len(self._server)

    def add_registration(self, config: UAConfig) -> Registration:
        """A further account (same transport and local address): its own binding, credentials
        and timers. Its registrar becomes a trusted source. Call ``start`` on it (or on the user
        agent, before adding) to register. Its registrar must be given as an address (the
        application resolves names, as it does for the first account's)."""
        reg = Registration(self, config, (config.server, config.port))
        self.registrations.append(reg)
        self.trust.add_registrar(config.server)
        return reg

    # ------------------------------------------------------------------ sans-I/O facade
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
        best = heap[0][0] if heap else None
        for part in self._parts():  # called after every datagram: no allocations beyond this
            d = part.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        return best

    next_deadline = get_timer

    def handle_timer(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            tx = entry[2]
            if _pending(entry):
                tx.handle_timer(now)
            if tx.terminated:
                self._forget(tx)
        for part in self._parts():
            deadline = part.next_deadline()
            if deadline is not None and deadline <= now:
                try:
                    part.handle_timer(now)
                except RemoteProtocolError:  # a stored header turned out unusable
                    self.counters["timer_errors"] += 1

    def _parts(self) -> tuple[Registration | Call | Failover, ...]:
        parts: tuple[Registration | Call | Failover, ...] = tuple(self.registrations)
        if self.failover is not None:
            parts += (self.failover,)
        return parts if self.call is None else (*parts, self.call)

    def use_targets(self, targets: list[Target], now: float, failback: float = 60.0) -> None:
        """The ordered servers of the first registration (RFC 3263's answer or the configured
        list, the first preferred): it fails over between them and returns to the first
        (``failover.py``). Called again when DNS answers again. Every target is trusted."""
        if self.failover is None:
            self.failover = Failover(self, self.reg, TargetSet(targets, failback),
                                     busy=lambda: self.in_call)
        else:
            self.failover.replace(targets, now)
        self.set_registrar_addresses([])

    def probing(self, addr: Addr) -> bool:
        """A failover probe to ``addr`` is under way: a stream adapter sends it over a
        short-lived connection of its own instead of moving the working one."""
        return self.failover is not None and self.failover.probing(addr)

    def server_name(self, addr: Addr) -> str | None:
        """The name the server at ``addr`` was found under — its SRV target, or its configured
        host or address — which its TLS certificate must carry; None: not a failover target."""
        if self.failover is None:
            return None
        for t in self.failover.targets.targets:
            if t.addr == addr:
                return t.identity
        return None

    def set_registrar_addresses(self, addresses: list[str]) -> None:
        """Every address the registrar's name resolves to (the application resolves it at
        start and at each registration). The addresses we send to (every account's registrar)
        stay trusted."""
        known = [*addresses, *(r.server_addr[0] for r in self.registrations)]
        if self.failover is not None:  # every server we may fail over to
            known += self.failover.targets.addresses()
        self.trust.set_registrar(known)

    def start(self, now: float) -> None:
        for reg in self.registrations:
            reg.start(now)

    def shutdown(self, now: float) -> None:
        """Hang up any call and remove our bindings (un-REGISTER)."""
        if self.in_call:
            self.hangup(now)
        for reg in self.registrations:
            reg.stop(now)

    def transport_error(self, addr: Addr, now: float, reason: str = "unreachable") -> None:
        """The transport could not reach ``addr`` (ICMP error, a stream that cannot be opened,
        a TLS certificate that does not verify); ``reason`` becomes the registration error."""
        self.counters["transport_errors"] += 1
        self.transport_reason = reason
        for tx in list(self._client.values()):
            if tx.dest == addr:
                tx.abort(now)
                self._forget(tx)
        self.transport_reason = None

    def datagram_failed(self, addr: Addr, reason: str) -> None:
        """The transport could not send one datagram to ``addr`` (too large for the path, a
        full socket buffer, no route, refused by a local firewall). That datagram is lost, as
        if the network had dropped it: it is counted, and the transaction that sent it
        retransmits or times out on its own timers. Nothing else is failed: one datagram that
        cannot go out — e.g. the reply to a request a peer crafted for that — must not cost
        the registration or anyone else's transactions."""
        self.counters[f"send_failed_{reason}"] += 1

    def connection_lost(self, now: float, reason: str) -> None:
        """The stream to the registrar closed: it can no longer reach us (we listen on no
        port), so the registrations are gone until we reconnect and register again."""
        self.transport_error(self.server_addr, now, reason)
        for reg in self.registrations:
            reg.connection_lost(reason, now)

    def transport_restored(self, now: float) -> None:
        """A stream transport reconnected (new local port): register again at once so that
        the registrar reaches us over the new connection."""
        for reg in self.registrations:
            reg.restart(now)

    # ------------------------------------------------------------------ call actions
    def call_target(self, target: str) -> str:
        """Turn an extension ("5001") or URI into a Request-URI on our server."""
        if ":" in target:
            return str(parse_uri(target))
        return f"sip:{target}@{self.config.aor_domain}"

    def make_call(self, target: str, media: LocalMedia, now: float) -> str:
        if self.in_call:
            raise LocalProtocolError("a call is already in progress")
        uri = self.call_target(target)
        self.call = Call.dial(self, self.reg.auth, self.server_addr, self.reg.aor, uri, media,
                              now)
        return self.call.call_id

    def answer(self, media: LocalMedia, now: float) -> None:
        self._current().answer(media, now)

    def reject(self, status: int, now: float) -> None:
        self._current().reject(status, now)

    def hangup(self, now: float) -> None:
        """End the call. Locally it always ends, even when no BYE/CANCEL can be built."""
        self._current().hangup(now)

    def _current(self) -> Call:
        if self.call is None:
            raise LocalProtocolError("no call")
        return self.call

    # ------------------------------------------------------------------ Stack (for the parts)
    def token(self, nbytes: int) -> str:
        return self._token(nbytes)

    def emit(self, event: SipEvent) -> None:
        self._events.append(event)

    def send(self, msg: Request | Response, addr: Addr) -> None:
        data = msg.to_bytes()
        if len(data) > MAX_DATAGRAM and not self.reliable:
            small = self._too_large_to_send(msg)
            if small is None:
                return
            data = small
        self._last_wire = (msg, data)
        self._out.append((data, addr))

    def _too_large_to_send(self, msg: Request | Response) -> bytes | None:
        """A message that no UDP datagram can carry is never attempted (RFC 3261 §18.1.1: it
        would need a congestion-controlled transport we do not have). A response becomes a
        513 with only the fields routing needs; a request is dropped, its transaction times
        out."""
        self.counters["too_large_to_send"] += 1
        if isinstance(msg, Request):
            return None
        resp = Response(status=513, reason=REASONS[513])
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in msg.headers.raw_all(name):
                resp.headers.add(name, value)
        data = resp.to_bytes()
        return data if len(data) <= MAX_DATAGRAM else None

    def send_raw(self, data: bytes, addr: Addr) -> None:
        self._out.append((data, addr))

    def _hostport(self) -> str:
        """Our address; port 0 (a stream transport not connected yet) is left out."""
        host, port = self.contact_addr
        return f"{host}:{port}" if port else host

    def contact(self, user: str | None = None) -> str:
        param = self.transport.uri_param
        params = f";transport={param}" if param else ""
        return f"<sip:{user or self.config.username}@{self._hostport()}{params}>"

    def via(self) -> str:
        return f"SIP/2.0/{self.transport.via} {self._hostport()};rport;branch=" \
               f"{MAGIC_COOKIE}{self._token(10)}"

    def new_request(self, method: str, uri: str, from_: str, to: str, call_id: str,
                    cseq: int, user: str | None = None) -> Request:
        req = Request(method=method, uri=uri)
        req.headers.add("Via", self.via())
        if self.config.outbound_proxy:  # RFC 3261 §8.1.2: a pre-existing route set
            req.headers.add("Route", f"<{self.config.outbound_proxy}>")
        req.headers.add("Max-Forwards", "70")
        req.headers.add("From", from_)
        req.headers.add("To", to)
        req.headers.add("Call-ID", call_id)
        req.headers.add("CSeq", f"{cseq} {method}")
        req.headers.add("Contact", self.contact(user))
        req.headers.add("User-Agent", self.config.user_agent)
        if method in ("INVITE", "REGISTER", "OPTIONS"):
            req.headers.add("Allow", ALLOW)
        return req

    def response(self, req: Request, status: int, *, to_tag: str | None = None,
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
            resp.headers.add("Contact", self.contact())
        if status == 200 and req.method in ("INVITE", "OPTIONS"):
            resp.headers.add("Allow", ALLOW)
        for name, value in extra or ():
            resp.headers.add(name, value)
        resp.headers.add("Server", self.config.user_agent)
        if body:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = body
        return resp

    def start_client(self, req: Request, dest: Addr, now: float, on_response: OnResponse,
                     on_timeout: OnTimeout) -> ClientTransaction:
        tx = ClientTransaction(req, dest, self.config.timers, self.reliable, self.send,
                               on_response, on_timeout, now, scheduled=self._schedule)
        self._client[tx.key] = tx
        return tx

    # ------------------------------------------------------------------ transaction tables
    def _schedule(self, tx: object, deadline: float) -> None:
        assert isinstance(tx, ClientTransaction | ServerTransaction)
        heapq.heappush(self._deadlines, (deadline, next(self._tie), tx))

    def _forget(self, tx: _Tx) -> None:
        if isinstance(tx, ClientTransaction):
            if self._client.get(tx.key) is tx:
                del self._client[tx.key]
        else:
            self.budget.release(tx)
            if self._server.get(tx.key) is tx:
                del self._server[tx.key]

    def _admit(self, tx: ServerTransaction, addr: Addr, cost: int) -> bool:
        """Store ``tx`` if the byte budget and its source's share allow (503 otherwise, by the
        caller). Room for the registrar may evict answered transactions, oldest first."""
        evicted = self.budget.admit(tx, self.trust.source_key(addr),
                                    self.trust.is_registrar(addr), cost)
        if evicted is None:
            return False
        for old in evicted:
            assert isinstance(old, ServerTransaction)
            if self._server.get(old.key) is old:
                del self._server[old.key]
            old.deadlines.clear()  # its index entries go stale: dropped below, or when due
            self._stale += 1
            self.counters["transactions_evicted"] += 1
        if self._stale > 64 and self._stale * 2 > len(self._deadlines):
            self._reindex()
        self._server[tx.key] = tx
        return True

    def _reindex(self) -> None:
        """Drop the index entries no transaction holds any more (evicted ones' above all), so
        that an evicted transaction's memory goes now, not when its old deadline comes up."""
        keep = []
        for entry in self._deadlines:
            if _pending(entry):
                keep.append(entry)
            elif entry[2].terminated:
                self._forget(entry[2])
        heapq.heapify(keep)
        self._deadlines = keep
        self._stale = 0

    def _settle(self, tx: ServerTransaction, request_cost: int) -> None:
        """Charge ``tx`` what it really holds now that it has (or has not) answered. An answered
        transaction that only absorbs retransmissions keeps its response as bytes and a stub of
        its request, and may be evicted to make room for the registrar."""
        if tx not in self.budget:
            return
        resp = tx.last_response
        call = self.call
        if resp is not None and tx.state in (TxState.COMPLETED, TxState.CONFIRMED) and \
                (call is None or call.invite_tx is not tx):
            wire = self._last_wire
            data = wire[1] if wire is not None and wire[0] is resp else resp.to_bytes()
            call_id = tx.request.headers.get("Call-ID") or ""
            tx.last_response = Serialized(resp.status, data)
            tx.request = Request(method=tx.request.method, uri="sip:answered",
                                 headers=Headers([("Call-ID", call_id)]))
            cost = len(data) + len(call_id) + sum(map(len, tx.key)) + TX_COST
            self.budget.settle(tx, cost, evictable=True)
            return
        cost = request_cost + TX_COST
        if resp is not None:
            cost += message_cost(len(resp.to_bytes()) if not isinstance(resp, Serialized)
                                 else len(resp.data), _fields(resp.headers))
        self.budget.settle(tx, cost)

    def _on_server_timeout(self, tx: ServerTransaction, why: str, now: float) -> None:
        if (call := self._call_of(tx.request.call_id)) is not None:
            call.server_timeout(tx, why, now)

    def _call_of(self, call_id: str) -> Call | None:
        """Route by Call-ID: the call this belongs to, if any."""
        call = self.call
        return call if call is not None and call.call_id == call_id else None

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
        if len(data) > self.config.max_message_size:
            self._too_large(data, addr)
            return
        try:
            msg = parse_message(data, max_size=self.config.max_message_size)
        except MalformedMessageError as exc:
            if exc.status == 513:  # too many header fields: as costly as too many bytes
                self._too_large(data, addr)
            else:
                self._reject_malformed(exc, addr)
            return
        try:
            if isinstance(msg, Request):
                self._receive_request(msg, addr, now, len(data))
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
        """Built from a bounded scan of the fields it echoes, never from a full parse: a
        stranger's message costs the same few microseconds whatever its size."""
        fields = echo_fields(data)
        if fields is None:
            self.counters["untrusted_unanswerable"] += 1
            return
        reply = echo_reply(fields, 403)
        if len(reply) <= len(data):  # never a reflection amplifier
            self._out.append((reply, addr))

    def _too_large(self, data: bytes, addr: Addr) -> None:
        """A trusted source's message over ``max_message_size`` (or with too many header
        fields): never parsed or stored; a request other than ACK gets 513 Message Too Large
        (RFC 3261 §21.5.14) built from the bounded scan, a response is dropped."""
        self.counters["rejected_too_large"] += 1
        fields = echo_fields(data)
        if fields is None or fields.method.upper() == b"ACK":
            return
        self._out.append((echo_reply(fields, 513, self._token(6)), addr))

    # ------------------------------------------------------------------ requests in
    def _receive_request(self, req: Request, addr: Addr, now: float, size: int = 0) -> None:
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
            if req.method != "ACK":  # the ACK of a non-2xx final ends its INVITE transaction
                self.counters["retransmissions_received"] += 1
            tx.receive_retransmission(req, now)
            return
        if req.method == "ACK":
            call = self._call_of(req.call_id)
            if call is None:  # an outgoing call takes the ACKs of re-INVITEs it answered
                self.counters["stray_acks"] += 1
            else:
                call.receive_ack(req, now)
            return
        if len(self._server) >= self.config.max_transactions:
            self.counters["dropped_overload"] += 1
            self._reply_stateless(req, addr, 503, "too many open transactions")
            return
        request_cost = message_cost(size or len(req.to_bytes()), _fields(req.headers))
        tx = ServerTransaction(req, addr, self.config.timers, self.reliable, self.send,
                               self._on_server_timeout, scheduled=self._schedule)
        if not self._admit(tx, addr, request_cost + TX_COST):
            self.counters["dropped_budget"] += 1
            self._reply_stateless(req, addr, 503, "transaction memory of this source in use")
            return
        try:
            self._receive_new(req, tx, addr, now)
        finally:
            self._settle(tx, request_cost)

    def _receive_new(self, req: Request, tx: ServerTransaction, addr: Addr, now: float) -> None:
        if req.method == "CANCEL":
            self._receive_cancel(req, tx, now)
            return
        try:
            self._new_request_in(req, tx, now)
        except RemoteProtocolError as exc:
            # answer through the transaction so that its timers reap it; never leave it open
            self.counters["dropped_malformed"] += 1
            call = self.call
            if call is None or call.invite_tx is not tx or not call.active:
                if tx.state in (TxState.TRYING, TxState.PROCEEDING):
                    tx.respond(self.response(req, exc.status, to_tag=self._token(6), extra=[
                        ("Warning", f"399 intercom {quote(exc.reason[:120])}")]), now)
                if tx.next_deadline() is None:
                    self._forget(tx)

    def _new_request_in(self, req: Request, tx: ServerTransaction, now: float) -> None:
        status, extra = _precheck(req)
        if status:
            tx.respond(self.response(req, status, extra=extra, to_tag=self._token(6)), now)
            return
        if req.to.tag:
            call = self._call_of(req.call_id)
            if call is None or not call.in_dialog(req):
                tx.respond(self.response(req, 481), now)
            else:
                call.receive_request(req, tx, now)
        elif req.method == "INVITE":
            self._incoming_invite(req, tx, now)
        elif req.method == "OPTIONS":
            tx.respond(self.response(req, 200, to_tag=self._token(6),
                                     extra=[("Accept", "application/sdp")]), now)
        else:  # BYE/INFO outside a dialog
            tx.respond(self.response(req, 481, to_tag=self._token(6)), now)

    def _incoming_invite(self, req: Request, tx: ServerTransaction, now: float) -> None:
        tx.respond(self.response(req, 100), now)
        if self.in_call:
            tx.respond(self.response(req, 486, to_tag=self._token(6)), now)
            self.counters["busy_rejections"] += 1
            self.emit(BusyRefused(str(req.from_.uri), req.from_.display))
            return
        try:
            Call.check_offer(self.config, req.body)
        except RemoteProtocolError as exc:
            tx.respond(self.response(req, exc.status, to_tag=self._token(6),
                                     extra=[("Warning", f'304 intercom {quote(exc.reason)}')]),
                       now)
            return
        # the call's requests go back to the server that sent the INVITE (after a failover
        # that may not be the one we are registered with now)
        dest = tx.dest if self.trust.is_registrar(tx.dest) else self.server_addr
        self.call = Call.incoming(self, self.reg.auth, dest, req, tx)
        self.call.ring(now)

    def _receive_cancel(self, req: Request, cancel_tx: ServerTransaction, now: float) -> None:
        invite_key = server_key(req)[:-1] + ("INVITE",)
        invite_tx = self._server.get(invite_key)
        if invite_tx is None:
            cancel_tx.respond(self.response(req, 481), now)
            return
        call = self.call
        owner = call if call is not None and call.invite_tx is invite_tx else None
        to_tag = owner.local_tag if owner is not None else self._token(6)
        cancel_tx.respond(self.response(req, 200, to_tag=to_tag), now)
        if owner is not None:
            owner.cancelled(now)
        elif invite_tx.state is TxState.PROCEEDING:
            invite_tx.respond(self.response(invite_tx.request, 487, to_tag=self._token(6)), now)

    # ------------------------------------------------------------------ responses in
    def _receive_response(self, resp: Response, now: float) -> None:
        vias = resp.vias
        if len(vias) != 1:
            self.counters["responses_misrouted"] += 1  # §8.1.3.3
            return
        tx = self._client.get(client_key(resp))
        if tx is None:
            call = self._call_of(resp.call_id)
            if call is not None and call.outgoing and call.ack is not None and \
                    resp.cseq.method == "INVITE" and 200 <= resp.status < 300:
                call.resend_ack()  # 2xx retransmission after Timer M
                return
            self.counters["unmatched_responses"] += 1
            return
        tx.receive(resp, now)

    # ------------------------------------------------------------------ stateless replies
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

    def _reply_stateless(self, req: Request, addr: Addr, status: int, reason: str) -> None:
        try:
            resp = self.response(req, status, extra=[("Warning", f"399 intercom {quote(reason)}")])
        except RemoteProtocolError:
            self.counters["dropped_malformed"] += 1
            return
        self.send(resp, addr)

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


def _precheck(req: Request) -> tuple[int, list[tuple[str, str]]]:
    """Method, URI scheme, Require and body checks of RFC 3261 §8.2 in that order."""
    if req.method in _KNOWN_NOT_ALLOWED:
        return 405, [("Allow", ALLOW)]
    if req.method not in ALLOW.split(", "):
        return 501, [("Allow", ALLOW)]
    if not isinstance(req.parsed_uri, SipUri):
        return 416, []
    required = [r for r in req.headers.get_all("Require") if r and r.lower() != "timer"]
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


def _fields(headers: Headers) -> int:
    return sum(1 for _ in headers)


def _pending(entry: tuple[float, int, _Tx]) -> bool:
    """The transaction still holds this deadline (later re-arms push new entries)."""
    deadline, _, tx = entry
    return not tx.terminated and deadline in tx.deadlines.values()
