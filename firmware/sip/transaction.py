"""SIP transactions (RFC 3261 §17, with the RFC 6026 Accepted state).

Owns the four transaction state machines, their timers A B D E F G H I J K L M (T1/T2/T4
configurable; each class maps the timers it runs to its handler once, in ``ON_TIMER``),
retransmission on unreliable transports only, and the matching keys. Time is passed in as
``now``; sending is a callback. Knows nothing about dialogs, calls or sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from .message import Request, Response

MAGIC_COOKIE = "z9hG4bK"
Addr = tuple[str, int]
Send = Callable[[Request | Response, Addr], None]
Schedule = Callable[["_Transaction", float], None]


@dataclass(frozen=True)
class TimerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class Timer(Enum):
    """RFC 3261 §17's transaction timers, by their letters."""

    A = "A"  # INVITE request retransmission (client, unreliable)
    B = "B"  # INVITE transaction timeout (client)
    D = "D"  # wait for response retransmissions (client INVITE, completed)
    E = "E"  # non-INVITE request retransmission (client, unreliable)
    F = "F"  # non-INVITE transaction timeout (client)
    G = "G"  # INVITE final response retransmission (server, unreliable)
    H = "H"  # wait for the ACK (server INVITE, completed)
    I = "I"  # noqa: E741 - wait for ACK retransmissions (server INVITE, confirmed)
    J = "J"  # wait for request retransmissions (server non-INVITE, completed)
    K = "K"  # wait for response retransmissions (client non-INVITE, completed)
    L = "L"  # wait for 2xx retransmissions' ACKs (server INVITE, accepted; RFC 6026)
    M = "M"  # wait for 2xx retransmissions (client INVITE, accepted; RFC 6026)


class State(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def client_key(msg: Request | Response) -> tuple[str, str]:
    """Key matching a response to its client transaction (§17.1.3)."""
    return msg.top_via.branch or "", msg.cseq.method


def server_key(req: Request) -> tuple[str, ...]:
    """Key matching a request to its server transaction (§17.2.3); ACK matches the INVITE."""
    via = req.top_via
    method = "INVITE" if req.method == "ACK" else req.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        host, port = via.sent_by
        return branch, f"{host}:{port}", method
    # RFC 2543 peers: no usable branch, fall back on the dialog/request identifiers
    return ("2543", req.call_id, str(req.cseq.number), req.from_.tag or "", str(via), method)


class _Transaction:
    ON_TIMER: ClassVar[Mapping[Timer, Callable[[Any, float], None]]] = {}

    def __init__(self, request: Request, dest: Addr, timers: TimerConfig, reliable: bool,
                 send: Send, scheduled: Schedule | None = None) -> None:
        self.request = request
        self._scheduled = scheduled  # told of every deadline set, so owners can index them
        self.dest = dest
        self.cfg = timers
        self.reliable = reliable
        self._send = send
        self.state = State.TRYING
        self.deadlines: dict[Timer, float] = {}
        self._intervals: dict[Timer, float] = {}

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def next_deadline(self) -> float | None:
        return min(self.deadlines.values(), default=None)

    def _start(self, name: Timer, now: float, delay: float) -> None:
        self._intervals[name] = delay
        self.deadlines[name] = now + delay
        if self._scheduled is not None:
            self._scheduled(self, now + delay)

    def _stop(self, *names: Timer) -> None:
        for name in names:
            self.deadlines.pop(name, None)

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self.deadlines.clear()

    def handle_timer(self, now: float) -> None:
        for name, deadline in sorted(self.deadlines.items(), key=lambda kv: kv[1]):
            if deadline <= now and name in self.deadlines and not self.terminated:
                del self.deadlines[name]
                self.ON_TIMER[name](self, now)


class ClientTransaction(_Transaction):
    """INVITE (§17.1.1) or non-INVITE (§17.1.2) client transaction."""

    def __init__(self, request: Request, dest: Addr, timers: TimerConfig, reliable: bool,
                 send: Send, on_response: Callable[[Response, ClientTransaction, float], None],
                 on_timeout: Callable[[ClientTransaction, float], None], now: float, *,
                 scheduled: Schedule | None = None) -> None:
        super().__init__(request, dest, timers, reliable, send, scheduled)
        self.invite = request.method == "INVITE"
        self._on_response = on_response
        self._on_timeout = on_timeout
        self.key = client_key(request)
        self.last_response: Response | None = None
        self.state = State.CALLING if self.invite else State.TRYING
        self._send(request, dest)
        if not reliable:
            self._start(Timer.A if self.invite else Timer.E, now, timers.t1)
        self._start(Timer.B if self.invite else Timer.F, now, 64 * timers.t1)

    def receive(self, resp: Response, now: float) -> None:
        if self.terminated:
            return
        if self.invite:
            self._receive_invite(resp, now)
        else:
            self._receive_non_invite(resp, now)

    def _receive_invite(self, resp: Response, now: float) -> None:
        if resp.status < 200:
            if self.state in (State.CALLING, State.PROCEEDING):
                self.state = State.PROCEEDING
                self._stop(Timer.A, Timer.B)
                self._deliver(resp, now)
        elif resp.status < 300:
            if self.state in (State.CALLING, State.PROCEEDING, State.ACCEPTED):
                if self.state is not State.ACCEPTED:
                    self.state = State.ACCEPTED
                    self.deadlines.clear()
                    self._start(Timer.M, now, 64 * self.cfg.t1)
                self._deliver(resp, now)  # retransmitted 2xx too: the UA re-sends its ACK
        else:
            if self.state in (State.CALLING, State.PROCEEDING):
                self.state = State.COMPLETED
                self.deadlines.clear()
                self._send(self._ack_for(resp), self.dest)
                self._start(Timer.D, now, 0 if self.reliable else 32.0)
                self._deliver(resp, now)
            elif self.state is State.COMPLETED:
                self._send(self._ack_for(resp), self.dest)

    def _receive_non_invite(self, resp: Response, now: float) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return
        if resp.status < 200:
            self.state = State.PROCEEDING
            self._deliver(resp, now)
            return
        self.state = State.COMPLETED
        self.deadlines.clear()
        self._start(Timer.K, now, 0 if self.reliable else self.cfg.t4)
        self._deliver(resp, now)

    def _deliver(self, resp: Response, now: float) -> None:
        self.last_response = resp
        self._on_response(resp, self, now)

    def abort(self, now: float) -> None:
        """The transport reported the destination unreachable (§17.1.4): fail now."""
        if not self.terminated:
            self._terminate()
            self._on_timeout(self, now)

    def _ack_for(self, resp: Response) -> Request:
        """ACK for a non-2xx final response: same branch, To from the response (§17.1.1.3)."""
        req = self.request
        ack = Request(method="ACK", uri=req.uri)
        for name in ("Via",):
            ack.headers.add(name, req.headers.get_all("Via")[0])
        for name in ("Route",):
            for value in req.headers.raw_all(name):
                ack.headers.add(name, value)
        ack.headers.add("Max-Forwards", "70")
        ack.headers.add("From", req.headers.get("From") or "")
        ack.headers.add("To", resp.headers.get("To") or "")
        ack.headers.add("Call-ID", req.call_id)
        ack.headers.add("CSeq", f"{req.cseq.number} ACK")
        return ack

    # timers
    def _resend_invite(self, now: float) -> None:
        self._send(self.request, self.dest)
        self._start(Timer.A, now, self._intervals[Timer.A] * 2)

    def _resend_request(self, now: float) -> None:
        self._send(self.request, self.dest)
        nxt = self.cfg.t2 if self.state is State.PROCEEDING else \
            min(self._intervals[Timer.E] * 2, self.cfg.t2)
        self._start(Timer.E, now, nxt)

    def _end(self, now: float) -> None:
        self._terminate()

    ON_TIMER = {Timer.A: _resend_invite, Timer.B: abort, Timer.D: _end, Timer.M: _end,
                Timer.E: _resend_request, Timer.F: abort, Timer.K: _end}


class ServerTransaction(_Transaction):
    """INVITE (§17.2.1 + RFC 6026) or non-INVITE (§17.2.2) server transaction."""

    def __init__(self, request: Request, dest: Addr, timers: TimerConfig, reliable: bool,
                 send: Send,
                 on_timeout: Callable[[ServerTransaction, str, float], None], *,
                 scheduled: Schedule | None = None) -> None:
        super().__init__(request, dest, timers, reliable, send, scheduled)
        self.invite = request.method == "INVITE"
        self.key = server_key(request)
        self.state = State.PROCEEDING if self.invite else State.TRYING
        self.last_response: Response | None = None
        self._on_timeout = on_timeout
        self.acked = False

    def respond(self, resp: Response, now: float) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return
        self.last_response = resp
        self._send(resp, self.dest)
        if resp.status < 200:
            self.state = State.PROCEEDING
        elif self.invite and resp.status < 300:
            self.state = State.ACCEPTED
            if not self.reliable:
                self._start(Timer.G, now, self.cfg.t1)
            self._start(Timer.L, now, 64 * self.cfg.t1)
        elif self.invite:
            self.state = State.COMPLETED
            if not self.reliable:
                self._start(Timer.G, now, self.cfg.t1)
            self._start(Timer.H, now, 64 * self.cfg.t1)
        else:
            self.state = State.COMPLETED
            self._start(Timer.J, now, 0 if self.reliable else 64 * self.cfg.t1)

    def receive_retransmission(self, req: Request, now: float) -> None:
        """A retransmitted request (or the ACK of a non-2xx final) reached this transaction."""
        if req.method == "ACK":
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self.deadlines.clear()
                self._start(Timer.I, now, 0 if self.reliable else self.cfg.t4)
            return
        if self.last_response is not None and self.state in (
                State.PROCEEDING, State.COMPLETED, State.TRYING):
            self._send(self.last_response, self.dest)

    def ack_2xx(self, now: float) -> None:
        """The dialog saw the ACK for our 2xx: stop retransmitting it."""
        if self.state is State.ACCEPTED:
            self.acked = True
            self._stop(Timer.G)

    # timers
    def _resend_response(self, now: float) -> None:
        if self.last_response is not None:
            self._send(self.last_response, self.dest)
        self._start(Timer.G, now, min(self._intervals[Timer.G] * 2, self.cfg.t2))

    def _no_ack(self, now: float) -> None:
        self._terminate()
        self._on_timeout(self, "no ACK for final response", now)

    def _accepted_over(self, now: float) -> None:
        acked = self.acked
        self._terminate()
        if not acked:
            self._on_timeout(self, "no ACK for 2xx", now)

    def _end(self, now: float) -> None:
        self._terminate()

    ON_TIMER = {Timer.G: _resend_response, Timer.H: _no_ack, Timer.L: _accepted_over,
                Timer.I: _end, Timer.J: _end}
