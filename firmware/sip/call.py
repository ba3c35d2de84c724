"""One call (baresip's ``sipsess``): INVITE in both directions, CANCEL (and its races with 2xx),
re-INVITE, BYE, INFO (DTMF), redirect and digest challenges, the ring timeout, session timers.

Owns the call's state (``CallState``), its INVITE transaction, the dialog, the SDP offer/answer
state and its timers (ring timeout, CANCEL guard, the RFC 4028 session refresh and expiry),
exposed as ``next_deadline()`` / ``handle_timer(now)`` like the transactions. Every call ends:
a BYE from the peer is always taken, a session nobody refreshes is ended with a BYE. Talks to
the user agent only through ``stack.Stack``; knows nothing about registration, the facade's
transaction tables or routing (the facade hands it only what belongs to it), sockets, clocks or
media I/O.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from ..events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    DtmfReceived,
    IncomingCall,
    MediaParams,
    MediaUpdated,
)
from .auth import Challenge, DigestClient
from .dialog import Dialog
from .errors import LocalProtocolError, RemoteProtocolError
from .headers import NameAddr
from .message import REASONS, Request, Response
from .sdp import LocalMedia, accept_answer, answer_offer, build_offer, parse_sdp
from .session_timer import (
    IntervalTooSmallError,
    SessionTimer,
    parse_min_se,
    refresh_headers,
    uac_negotiate,
    uas_negotiate,
)
from .stack import (
    ALLOW,
    MAX_AUTH_ANSWERS,
    Stack,
    UAConfig,
    challenge_of,
    ignore_response,
    ignore_timeout,
)
from .transaction import Addr, ClientTransaction, ServerTransaction
from .transaction import State as TxState
from .uri import SipUri

DTMF_DIGITS = "0123456789*#ABCD"
GLARE_RETRY = 2.5  # s before a refresh answered 491 is tried again (RFC 3261 §14.1: 2.1-4 s)
SUPPORTED = ("Supported", "timer")


class CallState(StrEnum):
    CALLING = "calling"  # outgoing, no ringing response yet
    RINGING = "ringing"  # outgoing with 18x, or incoming not answered yet
    CONFIRMED = "confirmed"
    ENDED = "ended"


class Call:
    """One call, outgoing (``dial``) or incoming (``incoming``)."""

    def __init__(self, stack: Stack, auth: DigestClient, dest: Addr, call_id: str,
                 outgoing: bool, remote: str, display: str | None,
                 local_media: LocalMedia | None, invite: Request, *,
                 state: CallState = CallState.CALLING, local_tag: str = "",
                 offer_body: bytes = b"") -> None:
        self._stack = stack
        self._auth = auth
        self.dest = dest  # where requests of this call go (the registrar/proxy)
        self.call_id = call_id
        self.outgoing = outgoing
        self.remote = remote
        self.display = display
        self.local_media = local_media
        self.invite = invite
        self.state = state
        self.invite_tx: ClientTransaction | ServerTransaction | None = None
        self.dialog: Dialog | None = None
        self.local_tag = local_tag
        self.media: MediaParams | None = None
        self.offer_body = offer_body  # the remote offer (incoming) or our offer (outgoing)
        self.provisional = False
        self.cancel_wanted = False
        self.cancel_sent = False
        self.challenges: list[Challenge] = []
        self.auth_answers = 0  # INVITEs re-sent with credentials, stale renewals included
        self.redirected = False
        self.answered_at: float | None = None
        self.last_sdp = b""
        self.ack: Request | None = None
        self._ring_at: float | None = None
        self._cancel_guard_at: float | None = None
        # RFC 4028: the negotiated interval, our Min-SE (raised by a 422), our pending refresh
        self.timer: SessionTimer | None = None
        self._min_se = stack.config.min_se
        self._too_small: int | None = None  # the initial INVITE gets 422 with this Min-SE
        self._session_request: int | None = None  # Session-Expires of our INVITE (after a 422)
        self._refresh_tx: ClientTransaction | None = None
        self._refreshed_for: float | None = None  # the interval start our last refresh was for
        self._refresh_retry_at: float | None = None
        self._refresh_retries = 0  # 422 and challenges answered for the current refresh
        self._refresh_ack: tuple[ClientTransaction, Request] | None = None

    # ------------------------------------------------------------------ creation
    @classmethod
    def dial(cls, stack: Stack, auth: DigestClient, dest: Addr, aor: SipUri, uri: str,
             media: LocalMedia, now: float) -> Call:
        """Start an outgoing call to ``uri``: send the INVITE, arm the ring timeout."""
        cfg = stack.config
        call_id = stack.token(12)
        local = NameAddr(aor, cfg.display_name, {"tag": stack.token(6)})
        req = stack.new_request("INVITE", uri, str(local), f"<{uri}>", call_id, 1)
        req.headers.add(*SUPPORTED)  # the answerer may set up session timers (RFC 4028 §7.1)
        offer = build_offer(media).to_bytes()
        req.headers.add("Content-Type", "application/sdp")
        req.body = offer
        call = cls(stack, auth, dest, call_id, True, uri, None, media, req, offer_body=offer,
                   local_tag=local.tag or "")
        call.last_sdp = offer
        call._send_invite(req, now)
        call._ring_at = now + cfg.ring_timeout
        return call

    @staticmethod
    def check_offer(config: UAConfig, body: bytes) -> None:
        """Raise RemoteProtocolError when an incoming offer cannot be answered (before ringing)."""
        if body:
            probe = LocalMedia("127.0.0.1", 9, config.codecs, srtp=config.srtp)
            answer_offer(parse_sdp(body), probe)

    @classmethod
    def incoming(cls, stack: Stack, auth: DigestClient, dest: Addr, req: Request,
                 tx: ServerTransaction) -> Call:
        """A call for a new INVITE (its offer already checked); ``ring`` makes it ring."""
        frm = req.from_
        call = cls(stack, auth, dest, req.call_id, False, str(frm.uri), frm.display, None, req,
                   state=CallState.RINGING, local_tag=stack.token(6), offer_body=req.body)
        call.invite_tx = tx
        call.dialog = Dialog.from_uas(req, call.local_tag)
        try:  # malformed Session-Expires/Min-SE: raised, answered 400 by the user agent
            uas_negotiate(req, call._min_se, 0.0, None)
        except IntervalTooSmallError as exc:
            call._too_small = exc.min_se
        return call

    def ring(self, now: float) -> None:
        assert isinstance(self.invite_tx, ServerTransaction)
        if self._too_small is not None:  # 422 (RFC 4028 §9): the caller retries, never rang
            self._stack.counters["session_interval_too_small"] += 1
            self.invite_tx.respond(self._stack.response(
                self.invite, 422, to_tag=self.local_tag,
                extra=[("Min-SE", str(self._too_small))]), now)
            self.state = CallState.ENDED  # announced to nobody: no IncomingCall was emitted
            return
        self.invite_tx.respond(self._stack.response(self.invite, 180, to_tag=self.local_tag),
                               now)
        self._ring_at = now + self._stack.config.ring_timeout
        self._stack.emit(IncomingCall(self.call_id, self.remote, self.display))

    # ------------------------------------------------------------------ timers
    @property
    def active(self) -> bool:
        return self.state is not CallState.ENDED

    def next_deadline(self) -> float | None:
        best = None
        for d in (self._ring_at, self._cancel_guard_at, self._session_deadline()):
            if d is not None and (best is None or d < best):
                best = d
        return best

    def handle_timer(self, now: float) -> None:
        if self._ring_at is not None and self._ring_at <= now:
            self._ring_at = None
            self._ring_timeout(now)
        if self._cancel_guard_at is not None and self._cancel_guard_at <= now:
            self._cancel_guard_at = None
            self.end("cancelled (no final response)", None, False)
        if (d := self._session_deadline()) is not None and d <= now:
            self._session_timer(now)

    def _refresh_due(self) -> float | None:
        """When our next refresh goes out: half the interval, once per interval (a refresh
        that failed without ending the call is not repeated: the expiry ends it), or the
        glare retry."""
        timer = self.timer
        if timer is None or not timer.we_refresh or self._refresh_tx is not None:
            return None
        if self._refresh_retry_at is not None:
            return self._refresh_retry_at
        return None if self._refreshed_for == timer.refreshed_at else timer.refresh_at

    def _session_deadline(self) -> float | None:
        timer = self.timer
        if timer is None or self.state is not CallState.CONFIRMED:
            return None
        due = self._refresh_due()
        return timer.expires_at if due is None else min(due, timer.expires_at)

    def _session_timer(self, now: float) -> None:
        timer = self.timer
        assert timer is not None
        if timer.expires_at <= now:
            self._stack.counters["session_expired"] += 1
            self._send_bye(now)
            self.end("session expired (not refreshed)", None, False)
        elif (due := self._refresh_due()) is not None and due <= now:
            self._refresh_retry_at, self._refresh_retries = None, 0
            self._send_refresh(now)

    def _ring_timeout(self, now: float) -> None:
        if self.state not in (CallState.CALLING, CallState.RINGING):
            return
        if self.outgoing:
            self.hangup(now)
            self.cancel_wanted = True
            self.end("no answer", None, False)
        else:
            assert isinstance(self.invite_tx, ServerTransaction)
            self.invite_tx.respond(self._stack.response(self.invite, 480,
                                                        to_tag=self.local_tag), now)
            self.end("not answered", 480, False)

    # ------------------------------------------------------------------ actions
    def _require(self, state: CallState) -> None:
        if self.state is not state:
            raise LocalProtocolError(f"no call in state {state}")

    def answer(self, media: LocalMedia, now: float) -> None:
        self._require(CallState.RINGING)
        if self.outgoing:
            raise LocalProtocolError("no call in state ringing")
        if not self.offer_body:  # late offer: we offer in the 200, the ACK carries the answer
            body = build_offer(media).to_bytes()
        else:
            try:
                sd, params = answer_offer(parse_sdp(self.offer_body), media)
            except RemoteProtocolError as exc:
                self.reject(exc.status, now)
                return
            body, self.media = sd.to_bytes(), params
        self.local_media, self.last_sdp = media, body
        self.timer, extra = uas_negotiate(self.invite, self._min_se, now, None)
        resp = self._stack.response(self.invite, 200, to_tag=self.local_tag, body=body,
                                    extra=[SUPPORTED, *extra])
        assert isinstance(self.invite_tx, ServerTransaction)
        self.invite_tx.respond(resp, now)
        self.state, self.answered_at = CallState.CONFIRMED, now
        self._ring_at = None
        self._stack.emit(CallAnswered(self.call_id, self.media))

    def reject(self, status: int, now: float) -> None:
        self._require(CallState.RINGING)
        if self.outgoing:
            raise LocalProtocolError("no call in state ringing")
        assert isinstance(self.invite_tx, ServerTransaction)
        try:
            self.invite_tx.respond(self._stack.response(self.invite, status,
                                                        to_tag=self.local_tag), now)
        except RemoteProtocolError:
            self._stack.counters["responses_unbuildable"] += 1
        self.end(f"rejected ({status} {REASONS.get(status, '')})", status, False)

    def hangup(self, now: float) -> None:
        """End the call. Locally it always ends, even when no BYE/CANCEL can be built."""
        if self.state is CallState.ENDED:
            raise LocalProtocolError("no call to hang up")
        if not self.outgoing and self.state is CallState.RINGING:
            self.reject(603, now)
        elif self.state is CallState.CONFIRMED:
            self._send_bye(now)
            self.end("local hangup", None, False)
        else:
            self.cancel_wanted = True
            if self.provisional:
                self._send_cancel(now)
            self._cancel_guard_at = now + 64 * self._stack.config.timers.t1

    def end(self, reason: str, status: int | None, by_remote: bool) -> None:
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self._ring_at = None
        self._stack.emit(CallEnded(self.call_id, reason, status, by_remote))

    # ------------------------------------------------------------------ outgoing INVITE
    def _send_invite(self, req: Request, now: float) -> None:
        self.invite = req
        self.invite_tx = self._stack.start_client(req, self.dest, now, self._on_invite_response,
                                                  self._on_invite_timeout)

    def _on_invite_response(self, resp: Response, tx: ClientTransaction, now: float) -> None:
        if resp.call_id != self.call_id:
            return
        try:
            self._invite_response(resp, now)
        except RemoteProtocolError as exc:
            self._stack.counters["dropped_malformed"] += 1
            if resp.status >= 200 and self.state is not CallState.ENDED:
                if self.dialog is not None:
                    self._send_bye(now)
                self.end(f"unusable {resp.status} response: {exc.reason}", None, True)

    def _invite_response(self, resp: Response, now: float) -> None:
        if resp.status < 200:
            self.provisional = True  # any 1xx, 100 included, allows CANCEL (§9.1)
            if resp.status > 100 and self.state is CallState.CALLING:
                self.state = CallState.RINGING
                self._stack.emit(CallRinging(self.call_id, resp.status))
            if self.cancel_wanted and not self.cancel_sent:
                self._send_cancel(now)
            return
        if resp.status < 300:
            self._invite_2xx(resp, now)
            return
        if resp.status in (401, 407) and not self.cancel_wanted and \
                self._answer_challenge(resp, now):
            return
        if 300 <= resp.status < 400 and not self.cancel_wanted and self._follow(resp, now):
            return
        if resp.status == 422 and not self.cancel_wanted and self._retry_interval(resp, now):
            return
        if self.state is CallState.ENDED:
            return
        if resp.status == 487 and self.cancel_wanted:
            self.end("cancelled", 487, False)
        else:
            self.end(f"{resp.status} {resp.reason}", resp.status, True)

    def _resend_invite(self, uri: str, now: float) -> Request:
        old = self.invite
        req = self._stack.new_request("INVITE", uri, old.headers.get("From") or "",
                                      old.headers.get("To") or "", self.call_id,
                                      old.cseq.number + 1)
        req.headers.add(*SUPPORTED)
        if self._session_request is not None:
            req.headers.add("Session-Expires", str(self._session_request))
            req.headers.add("Min-SE", str(self._session_request))
        req.headers.add("Content-Type", "application/sdp")
        req.body = old.body
        return req

    def _retry_interval(self, resp: Response, now: float) -> bool:
        """422 to our INVITE (a proxy asked for a session interval the answerer finds too
        short): send it again once, asking for the answerer's Min-SE (RFC 4028 §7.4)."""
        min_se = parse_min_se(resp.headers.get("Min-SE"))
        if min_se is None or self._session_request is not None:
            return False
        self._session_request = self._min_se = max(min_se, self._min_se)
        req = self._resend_invite(self.invite.uri, now)
        for ch in self.challenges:
            req.headers.add(*self._auth.authorization(ch, "INVITE", req.uri))
        self.provisional = False
        self._send_invite(req, now)
        return True

    def _follow(self, resp: Response, now: float) -> bool:
        """Follow a redirect (3xx) once, to its first SIP Contact (RFC 3261 §8.1.3.4)."""
        targets = [c.uri for c in resp.contacts if isinstance(c.uri, SipUri)]
        if self.redirected or not targets:
            return False
        self.redirected = True
        uri = str(targets[0].without_headers())
        req = self._resend_invite(uri, now)
        self.remote, self.provisional = uri, False
        self._send_invite(req, now)
        return True

    def _answer_challenge(self, resp: Response, now: float) -> bool:
        """Re-send the INVITE with credentials. A registrar's 401 followed by a proxy's 407
        is answered; the same realm challenging twice (wrong password) is not."""
        challenge = challenge_of(resp)
        if challenge is None:
            return False
        same = [c for c in self.challenges
                if (c.proxy, c.realm) == (challenge.proxy, challenge.realm)]
        if (same and not challenge.stale) or len(self.challenges) >= 4 or \
                self.auth_answers >= MAX_AUTH_ANSWERS + 1:  # one more: registrar and proxy
            return False
        self.auth_answers += 1
        self.challenges = [c for c in self.challenges if c not in same] + [challenge]
        uri = self.invite.uri
        req = self._resend_invite(uri, now)
        for ch in self.challenges:
            req.headers.add(*self._auth.authorization(ch, "INVITE", uri))
        self.provisional = False
        self._send_invite(req, now)
        return True

    def _invite_2xx(self, resp: Response, now: float) -> None:
        if self.dialog is not None:  # retransmitted 2xx: our ACK was lost
            self.resend_ack()
            return
        self.dialog = Dialog.from_uac(self.invite, resp)
        ack = self.dialog.create_request("ACK", cseq=self.invite.cseq.number)
        ack.headers.add("Via", self._stack.via())
        for name in ("Authorization", "Proxy-Authorization"):
            if (value := self.invite.headers.get(name)) is not None:
                ack.headers.add(name, value)
        self.ack = ack
        self._stack.send(ack, self.dest)
        self._ring_at = self._cancel_guard_at = None
        if self.cancel_wanted or self.state is CallState.ENDED:
            self._send_bye(now)  # 200 raced our CANCEL (§9.1): end it with BYE
            self.end("cancelled", None, False)
            return
        try:
            self.media = accept_answer(parse_sdp(resp.body), self.local_media) \
                if resp.body and self.local_media else None
        except RemoteProtocolError as exc:
            self._send_bye(now)
            self.end(f"unusable SDP answer: {exc.reason}", None, False)
            return
        try:
            self.timer = uac_negotiate(resp, self._min_se, now)
        except RemoteProtocolError as exc:
            self._send_bye(now)
            self.end(f"unusable 2xx response: {exc.reason}", None, False)
            return
        self.state, self.answered_at = CallState.CONFIRMED, now
        self._stack.emit(CallAnswered(self.call_id, self.media))

    def resend_ack(self) -> None:
        """A 2xx retransmission (also after the INVITE transaction ended): ACK it again."""
        if self.ack is not None:
            self._stack.send(self.ack, self.dest)

    def _on_invite_timeout(self, tx: ClientTransaction, now: float) -> None:
        if self.invite_tx is tx and self.state is not CallState.ENDED:
            self.end("no response to INVITE (timeout)", 408, True)

    def _send_cancel(self, now: float) -> None:
        inv = self.invite
        req = Request(method="CANCEL", uri=inv.uri)
        req.headers.add("Via", inv.headers.get_all("Via")[0])
        for route in inv.headers.raw_all("Route"):
            req.headers.add("Route", route)
        req.headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            req.headers.add(name, inv.headers.get(name) or "")
        req.headers.add("CSeq", f"{inv.cseq.number} CANCEL")
        req.headers.add("User-Agent", self._stack.config.user_agent)
        self.cancel_sent = True
        self._stack.start_client(req, self.dest, now, ignore_response, ignore_timeout)

    def _send_bye(self, now: float, challenge: Challenge | None = None) -> None:
        """Send BYE if one can be built; never raises (the caller ends the call anyway)."""
        dialog = self.dialog
        if dialog is None:
            return
        try:
            bye = dialog.create_request("BYE")
            bye.headers.add("Via", self._stack.via())
            bye.headers.add("User-Agent", self._stack.config.user_agent)
            if challenge is not None:
                bye.headers.add(*self._auth.authorization(challenge, "BYE", bye.uri))
        except RemoteProtocolError:
            self._stack.counters["bye_unsendable"] += 1
            return

        def on_response(resp: Response, tx: ClientTransaction, now: float) -> None:
            if resp.status in (401, 407) and challenge is None:
                if (again := challenge_of(resp)) is not None:
                    self._send_bye(now, again)

        self._stack.start_client(bye, self.dest, now, on_response, ignore_timeout)

    # ------------------------------------------------------------------ requests in
    def cancelled(self, now: float) -> None:
        """The caller's CANCEL reached our INVITE transaction while it still rings."""
        assert isinstance(self.invite_tx, ServerTransaction)
        if self.invite_tx.state is TxState.PROCEEDING:
            self.invite_tx.respond(self._stack.response(self.invite, 487,
                                                        to_tag=self.local_tag), now)
            self.end("cancelled by caller", 487, True)

    def receive_ack(self, req: Request, now: float) -> None:
        tx = self.invite_tx
        if not isinstance(tx, ServerTransaction):  # no INVITE of the peer's was answered
            self._stack.counters["stray_acks"] += 1
            return
        tx.ack_2xx(now)
        if self.local_media and self.media is None and self.state is not CallState.ENDED:
            # a late offer (INVITE without SDP): the answer must come in this ACK. Without a
            # usable one (no SDP, no common codec, no SRTP key where media.srtp is required)
            # the call would stand without media: end it (RFC 3264 leaves no other way)
            try:
                if not req.body:
                    raise RemoteProtocolError("the ACK carries no SDP answer")
                self.media = accept_answer(parse_sdp(req.body), self.local_media)
                self._stack.emit(MediaUpdated(self.call_id, self.media))
            except RemoteProtocolError as exc:
                self._stack.counters["bad_sdp_in_ack"] += 1
                self._send_bye(now)
                self.end(f"unusable SDP answer in ACK: {exc.reason}", None, False)

    def in_dialog(self, req: Request) -> bool:
        """``req`` belongs to this call's dialog, which still stands."""
        dialog = self.dialog
        return dialog is not None and self.state is not CallState.ENDED and \
            (req.call_id, req.to.tag, req.from_.tag) == dialog.key

    def receive_request(self, req: Request, tx: ServerTransaction, now: float) -> None:
        """A request inside this call's dialog (``in_dialog`` was checked)."""
        stack, dialog = self._stack, self.dialog
        assert dialog is not None
        try:
            odd = dialog.receive_request(req)
        except RemoteProtocolError as exc:  # a CSeq not above the last one (never on a BYE)
            stack.counters["cseq_refused"] += 1
            tx.respond(stack.response(req, exc.status), now)
            return
        if odd == "jump":
            stack.counters["cseq_jumps"] += 1
        elif odd == "lower_bye":
            stack.counters["bye_cseq_lower"] += 1
        if req.method == "BYE":
            tx.respond(stack.response(req, 200), now)
            invite_tx = self.invite_tx
            if not self.outgoing and self.state is CallState.RINGING and \
                    isinstance(invite_tx, ServerTransaction) and \
                    invite_tx.state is TxState.PROCEEDING:  # BYE on the early dialog (§15.1.2)
                invite_tx.respond(stack.response(self.invite, 487, to_tag=self.local_tag), now)
            self.end("remote hangup", None, True)
        elif req.method == "INVITE":
            self._reinvite(req, tx, now)
        elif req.method == "INFO":
            digit = dtmf_from_info(req)
            tx.respond(stack.response(req, 200 if digit is not None or not req.body else 415),
                       now)
            if digit is not None:
                stack.emit(DtmfReceived(self.call_id, digit))
        else:  # OPTIONS
            tx.respond(stack.response(req, 200, extra=[("Accept", "application/sdp")]), now)

    def _reinvite(self, req: Request, tx: ServerTransaction, now: float) -> None:
        stack = self._stack
        if self.state is not CallState.CONFIRMED or self.local_media is None or \
                self._refresh_tx is not None:  # our own re-INVITE is pending: glare (§14.2)
            tx.respond(stack.response(req, 491), now)
            return
        try:  # a re-INVITE is a session refresh (RFC 4028 §9), whoever the refresher is
            timer, timer_headers = uas_negotiate(req, self._min_se, now, self.timer)
        except IntervalTooSmallError as exc:
            tx.respond(stack.response(req, 422, extra=[("Min-SE", str(exc.min_se))]), now)
            return
        except RemoteProtocolError as exc:
            tx.respond(stack.response(req, exc.status), now)
            return
        media = self.local_media
        if req.body:
            try:
                sd, params = answer_offer(parse_sdp(req.body), media)
            except RemoteProtocolError as exc:
                tx.respond(stack.response(req, exc.status), now)
                return
            body = sd.to_bytes()
            if body != self.last_sdp:
                media = replace(media, version=media.version + 1)
                sd, params = answer_offer(parse_sdp(req.body), media)
                body = sd.to_bytes()
            self.local_media, self.last_sdp, self.media = media, body, params
            stack.emit(MediaUpdated(self.call_id, params))
        else:
            body = build_offer(media).to_bytes()
            self.media = None
        self.invite, self.invite_tx = req, tx
        self.timer, self._refresh_retry_at = timer, None
        tx.respond(stack.response(req, 200, body=body, extra=[SUPPORTED, *timer_headers]), now)

    # ------------------------------------------------------------------ session refresh out
    def _send_refresh(self, now: float, challenge: Challenge | None = None) -> None:
        """Refresh the session as its refresher: a re-INVITE with the SDP we last sent (same
        version: nothing changed, RFC 3264 §8) and the interval we hold (RFC 4028 §7.4)."""
        dialog, timer = self.dialog, self.timer
        assert dialog is not None and timer is not None
        stack = self._stack
        self._refreshed_for = timer.refreshed_at
        try:
            req = dialog.create_request("INVITE")
            req.headers.add("Via", stack.via())
            req.headers.add("Contact", stack.contact())
            req.headers.add("Allow", ALLOW)
            req.headers.add("User-Agent", stack.config.user_agent)
            for name, value in refresh_headers(timer, self._min_se):
                req.headers.add(name, value)
            if challenge is not None:
                req.headers.add(*self._auth.authorization(challenge, "INVITE", req.uri))
        except RemoteProtocolError:  # a stored header turned out unusable: the expiry ends it
            stack.counters["refresh_unsendable"] += 1
            return
        if self.last_sdp:
            req.headers.add("Content-Type", "application/sdp")
            req.body = self.last_sdp
        stack.counters["session_refreshes"] += 1
        self._refresh_tx = stack.start_client(req, self.dest, now, self._on_refresh_response,
                                              self._on_refresh_timeout)

    def _on_refresh_response(self, resp: Response, tx: ClientTransaction, now: float) -> None:
        if resp.status < 200:
            return
        if 200 <= resp.status < 300:
            self._refresh_2xx(resp, tx, now)
            return
        if tx is not self._refresh_tx:
            return
        self._refresh_tx = None
        if self.state is not CallState.CONFIRMED or self.timer is None:
            return
        if resp.status in (408, 481):  # the peer lost the session (RFC 4028 §10)
            self._refresh_failed(f"{resp.status} {resp.reason}", now)
        elif resp.status == 491:
            self._refresh_retry_at = now + GLARE_RETRY
        elif resp.status == 422 and self._refresh_retries < 2 and \
                (min_se := parse_min_se(resp.headers.get("Min-SE"))) is not None:
            self._refresh_retries += 1
            self._min_se = max(self._min_se, min_se)
            self.timer = replace(self.timer, interval=max(self.timer.interval, min_se))
            self._send_refresh(now)
        elif resp.status in (401, 407) and self._refresh_retries < 2 and \
                (challenge := challenge_of(resp)) is not None:
            self._refresh_retries += 1
            self._send_refresh(now, challenge)
        else:  # the session goes on unrefreshed: its expiry ends it if nothing else does
            self._stack.counters["session_refresh_refused"] += 1

    def _refresh_2xx(self, resp: Response, tx: ClientTransaction, now: float) -> None:
        dialog, stack = self.dialog, self._stack
        assert dialog is not None
        if self._refresh_ack is not None and self._refresh_ack[0] is tx:
            stack.send(self._refresh_ack[1], self.dest)  # a retransmitted 2xx: our ACK was lost
            return
        ack = dialog.create_request("ACK", cseq=tx.request.cseq.number)
        ack.headers.add("Via", stack.via())
        for name in ("Authorization", "Proxy-Authorization"):
            if (value := tx.request.headers.get(name)) is not None:
                ack.headers.add(name, value)
        self._refresh_ack = (tx, ack)
        stack.send(ack, self.dest)
        if tx is not self._refresh_tx:
            return
        self._refresh_tx = None
        if self.state is not CallState.CONFIRMED:
            return
        try:
            # no Session-Expires in the 2xx: the peer asks for no timer; we keep refreshing
            # anyway (harmless to it, and a peer that lost the call answers 481: BYE)
            timer = uac_negotiate(resp, self._min_se, now)
            if timer is None and self.timer is not None:
                timer = replace(self.timer, we_refresh=True, refreshed_at=now)
            params = accept_answer(parse_sdp(resp.body), self.local_media) \
                if resp.body and self.local_media else self.media
        except RemoteProtocolError as exc:
            self._send_bye(now)
            self.end(f"unusable answer to a session refresh: {exc.reason}", None, False)
            return
        dialog.refresh_target(resp)
        self.timer = timer
        if params is not None and params != self.media:
            self.media = params
            stack.emit(MediaUpdated(self.call_id, params))

    def _on_refresh_timeout(self, tx: ClientTransaction, now: float) -> None:
        if tx is self._refresh_tx:
            self._refresh_tx = None
            if self.state is CallState.CONFIRMED:
                self._refresh_failed("timeout", now)

    def _refresh_failed(self, why: str, now: float) -> None:
        self._stack.counters["session_refresh_failed"] += 1
        self._send_bye(now)
        self.end(f"session refresh failed ({why})", None, False)

    def server_timeout(self, tx: ServerTransaction, why: str, now: float) -> None:
        if self.invite_tx is tx and why == "no ACK for 2xx" and self.state is not CallState.ENDED:
            self._send_bye(now)
            self.end("no ACK from caller", None, True)


def dtmf_from_info(req: Request) -> str | None:
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
