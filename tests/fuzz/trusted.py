"""Full calls fuzzed from a trusted source: the whole App (supervisor, SIP user agent) on the
fakes of devtools/box/fakes.py, a sans-I/O user agent as the PBX, and in-dialog requests
forged from the PBX's own address, the way an SBC or a LAN host spoofing the PBX would send
them.

A forged request is a *template*: real SIP text with placeholders the harness fills in with the
live call's IDs when it sends it (``$CALLID``, ``$PBXTAG``, ``$BOXTAG``, ``$BOXURI``, ``$CSEQ``
the PBX's next CSeq, ``$BRANCH`` a fresh branch, ``$INVCSEQ``/``$INVBRANCH`` those of the last
forged INVITE), so byte mutations of a template keep reaching the dialog code. A sequence is
a list of ``Step``s; ``encode``/``decode`` turn one into bytes for atheris.

After every sequence ``TrustedCall.finish`` checks what issue #23 asks: the PBX's hang-up ends
the call (nothing stuck), the box is still registered, its transactions and the bytes they hold
go back under a bound once the timers have run, and a new call is answered with media started
for the negotiated address, port and codec.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import Any

from devtools.box.fakes import PBX_ADDR, FakeBox, FakeTransport, run
from firmware.events import CallEnded, MediaParams
from firmware.sip.message import Request
from firmware.sip.sdp import LocalMedia
from firmware.sip.ua import UserAgent

SETTLE_S = 70.0  # 64 x T1 (0.5 s) and T4 after the last message: every transaction is reaped
MAX_OPEN_AFTER = 1  # a registration refresh may be in flight
MAX_HELD_BYTES = 8 * 1024  # what the open transactions may still hold once settled
FIELD = re.compile(rb"\$(CALLID|PBXTAG|BOXTAG|BOXURI|CSEQ|BRANCH|INVCSEQ|INVBRANCH)")
_CSEQ_LINE = re.compile(rb"^CSeq:\s*(\d{1,10})\s+INVITE", re.M | re.I)
_VIA_BRANCH = re.compile(rb"branch=z9hG4bK([!-~]{1,64}?)(?=[;\r\n ,])")

@dataclass(frozen=True)
class Step:
    template: bytes  # a request (or anything) with placeholders
    repeat: int = 1  # sent this many times (retransmissions, same branch)
    advance: float = 0.0  # virtual seconds that pass afterwards


class _Transport(FakeTransport):
    """The fake transport, keeping what a forged Via sends elsewhere than the PBX."""

    def __init__(self) -> None:
        super().__init__()
        self.elsewhere: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr == PBX_ADDR:
            super().send(data, addr)
        else:
            self.elsewhere.append((data, addr))


def held_bytes(ua: UserAgent) -> int:
    """Bytes of the requests and last responses the user agent's open transactions keep."""
    total = 0
    for tx in [*ua._client.values(), *ua._server.values()]:  # noqa: SLF001 - the budget
        total += len(tx.request.to_bytes())
        if (last := getattr(tx, "last_response", None)) is not None:
            total += len(last.to_bytes())
    return total


class Filler:
    """Fills a template's placeholders with a live call's IDs (``fields``: CALLID, PBXTAG,
    BOXTAG, BOXURI), ``next_cseq()`` for ``$CSEQ``, fresh branches, and the CSeq and branch of
    the last INVITE sent (at first: ``invite``, the call's own, so a CANCEL races it)."""

    def __init__(self, fields: dict[bytes, bytes], next_cseq: Callable[[], int],
                 invite: Request) -> None:
        self.fields = fields
        self.next_cseq = next_cseq
        self.inv_cseq = b"%d" % invite.cseq.number
        self.inv_branch = (invite.top_via.branch or "").removeprefix("z9hG4bK").encode()
        self._branches = count()

    def fill(self, template: bytes) -> bytes:
        def one(m: re.Match[bytes]) -> bytes:
            name = m.group(1)
            if name == b"BRANCH":
                return b"forged%d" % next(self._branches)
            if name == b"CSEQ":
                return b"%d" % self.next_cseq()
            if name == b"INVCSEQ":
                return self.inv_cseq
            if name == b"INVBRANCH":
                return self.inv_branch
            return self.fields[name]

        data = FIELD.sub(one, template)
        if data.startswith(b"INVITE "):
            head = data.split(b"\r\n\r\n", 1)[0]
            if (c := _CSEQ_LINE.search(head)) is not None:
                self.inv_cseq = c.group(1)
            if (b := _VIA_BRANCH.search(head)) is not None:
                self.inv_branch = b.group(1)
        return data


class TrustedCall:
    """A box registered and in an answered call from the PBX; forged requests from the PBX's
    address go in through ``play``; ``finish`` ends the call and checks the invariants."""

    def __init__(self, ringing: bool = False) -> None:
        """``ringing``: the forged steps come while the box still rings (it answers in
        ``finish`` if nothing ended the call), else once it has answered."""
        self.box = FakeBox(sip={"register": True}, calls={"auto_answer": not ringing})
        self.transport = _Transport()
        self.box.net.transport = self.transport
        self.sent: list[bytes] = []
        run(self.box.app.start())
        self.box.clock.run()
        self.box.pump()
        assert self.app.state == "idle" and self.ua.registered, "registered before the call"
        self._call(30000, answer=not ringing)
        pbx_call = self.box.pbx.call
        assert pbx_call is not None
        invite = pbx_call.invite
        self._cseq = invite.cseq.number
        ringing_180 = [d for d in self.box.wire if d.startswith(b"SIP/2.0 180")][-1]
        box_tag = re.search(rb"^To:.*;tag=([^;\r]+)", ringing_180, re.M | re.I)
        assert box_tag is not None
        self.filler = Filler({b"CALLID": pbx_call.call_id.encode(),
                              b"PBXTAG": (invite.from_.tag or "").encode(),
                              b"BOXTAG": box_tag.group(1),
                              b"BOXURI": pbx_call.dialog.remote_target.encode()
                              if pbx_call.dialog else b"sip:5002@127.0.0.1:5070"},
                             self._next_cseq, invite)

    def _next_cseq(self) -> int:
        """The PBX's own next request (an SBC relaying it): its CSeq is taken."""
        dialog = self.box.pbx.call.dialog if self.box.pbx.call else None
        if dialog is None:
            self._cseq += 1
            return self._cseq
        dialog.local_cseq += 1
        return dialog.local_cseq

    @property
    def app(self) -> Any:
        return self.box.app

    @property
    def ua(self) -> UserAgent:
        return self.box.app.ua

    def _call(self, rtp_port: int, answer: bool = True) -> None:
        """The PBX calls; the box answers by itself (or only rings) and starts media for what
        was offered."""
        sessions = len(self.box.media.sessions)
        self.box.pbx.make_call("sip:5002@127.0.0.1:5070", LocalMedia(PBX_ADDR[0], rtp_port),
                               self.box.clock.now)
        self.box.pump()
        if not answer:
            assert self.app.state == "ringing", f"the box rings (state {self.app.state})"
            return
        if self.app.state == "ringing" and not self.app.cfg.calls.auto_answer:
            assert run(self.app.handle_command({"cmd": "answer"}))["ok"]
            self.box.pump()
        assert self.app.state == "in_call", f"the box answers (state {self.app.state})"
        self._media_started(sessions, rtp_port)

    def _media_started(self, sessions: int, rtp_port: int) -> None:
        assert len(self.box.media.sessions) == sessions + 1, "media started for the call"
        session = self.box.media.sessions[-1]
        media = session.media[0]
        assert session.running and (media.remote_addr, media.remote_port) == \
            (PBX_ADDR[0], rtp_port), f"media to the offered address: {media}"
        assert media.codec == "PCMU" and media.direction == "sendrecv"

    # ------------------------------------------------------------ forged input
    def fill(self, template: bytes) -> bytes:
        return self.filler.fill(template)

    def play(self, step: Step) -> None:
        data = self.fill(step.template)
        for _ in range(step.repeat):
            self.sent.append(data)
            self.box.net.transport.driver.datagram(data, PBX_ADDR)
            self.box.pump()
        if step.advance:
            self.box.advance(step.advance)

    # ------------------------------------------------------------ the verdict
    def _box_answers(self, method: str) -> list[bytes]:
        return [d for d in self.box.wire if d.startswith(b"SIP/2.0 ")
                and re.search(rb"^CSeq:\s*\d+\s+" + method.encode() + rb"\r", d, re.M | re.I)]

    def _pbx_call(self) -> bool:
        """The box's current call is the PBX's own (not one a forged INVITE started)."""
        call, f = self.ua.call, self.filler.fields
        return call is not None and call.active and call.call_id.encode() == f[b"CALLID"] \
            and call.local_tag.encode() == f[b"BOXTAG"]

    def finish(self) -> None:
        """The PBX hangs up; then every invariant of an undisturbed box must hold."""
        box, app = self.box, self.app
        if app.state == "ringing" and self._pbx_call():  # nothing ended it: reception answers
            sessions = len(box.media.sessions)
            assert run(app.handle_command({"cmd": "answer"}))["ok"], "answers"
            box.pump()
            assert app.state == "in_call", f"answered: state {app.state}"
            self._media_started(sessions, 30000)
            if box.pbx.call is not None and box.pbx.call.dialog is not None:  # relayed CSeqs
                box.pbx.call.dialog.local_cseq = max(box.pbx.call.dialog.local_cseq, self._cseq)
        if box.pbx.in_call:
            pbx_call_up = self._pbx_call()
            byes = len(self._box_answers("BYE"))
            box.pbx.hangup(box.clock.now)
            box.pump()
            answer = (self._box_answers("BYE")[byes:] or [b"nothing"])[0].split(b"\r\n")[0]
            # at once: not later through the media timeout, a session timer or max_duration
            assert not (pbx_call_up and self._pbx_call()), \
                f"the PBX's BYE (answered {answer!r}) left the box {app.state}"
        box.advance(SETTLE_S)
        if app.state != "idle":  # a call a forged INVITE (no To tag) started: bounded too
            assert not self._pbx_call(), f"the PBX's call is stuck: state {app.state}"
            box.advance(app.cfg.calls.max_duration + app.cfg.calls.ring_timeout)
        assert app.state == "idle", f"a call is stuck: state {app.state}"
        for session in box.media.sessions:
            for media in session.media:
                assert (problem := media_problem(media)) is None, problem
        assert not self.ua.in_call and app.media_control.session is None, "no call, no media"
        assert self.ua.registered and box.board.leds.get("registered") == "on", "registered"
        assert self.ua.open_transactions <= MAX_OPEN_AFTER, \
            f"{self.ua.open_transactions} transactions still open"
        assert held_bytes(self.ua) <= MAX_HELD_BYTES, f"{held_bytes(self.ua)} bytes still held"
        if box.pbx.call is not None and box.pbx.call.active:  # the PBX still thinks it is up
            box.pbx.hangup(box.clock.now)
            box.pump()
        self._call(30010)  # takes a new call, with media for what was negotiated
        box.pbx.hangup(box.clock.now)
        box.pump()
        assert app.state == "idle" and any(isinstance(e, CallEnded) for e in box.pbx_events)


def media_problem(media: MediaParams) -> str | None:
    """What is wrong with media handed to the media core: every address must be one the
    media core parses to the same answer, every port usable (anything else is a 488)."""
    try:
        canonical = str(ipaddress.ip_address(media.remote_addr))
    except ValueError:
        canonical = None
    if canonical != media.remote_addr:
        return f"media to an odd address: {media.remote_addr!r}"
    if not 0 < media.remote_port < 65536 and media.direction != "inactive":
        return f"media to port {media.remote_port}"
    return None


def run_sequence(steps: list[Step], ringing: bool = False) -> TrustedCall:
    """A fresh call, the forged steps, and the verdict (an AssertionError says what broke)."""
    call = TrustedCall(ringing)
    try:
        for step in steps:
            call.play(step)
        call.finish()
    finally:  # a failed verdict leaves a call up: release its fake media session's fd
        for session in call.box.media.sessions:
            if session.running:
                session.stop()
    return call


# ------------------------------------------------------------------ templates
def request(method: str, *, cseq: bytes = b"$CSEQ", cseq_method: str | None = None,
            call_id: bytes = b"$CALLID", from_tag: bytes = b"$PBXTAG",
            to_tag: bytes = b"$BOXTAG", branch: bytes = b"$BRANCH", body: bytes = b"",
            ctype: bytes = b"", extra: bytes = b"") -> bytes:
    """An in-dialog request as the PBX would send it, with placeholders."""
    to = b"<sip:5002@127.0.0.1>" + (b";tag=" + to_tag if to_tag else b"")
    head = [method.encode() + b" $BOXURI SIP/2.0",
            b"Via: SIP/2.0/UDP 127.0.0.2:5080;rport;branch=z9hG4bK" + branch,
            b"Max-Forwards: 70", b"From: <sip:5001@127.0.0.2>;tag=" + from_tag, b"To: " + to,
            b"Call-ID: " + call_id, b"CSeq: " + cseq + b" " + (cseq_method or method).encode(),
            b"Contact: <sip:5001@127.0.0.2:5080>"]
    if ctype:
        head.append(b"Content-Type: " + ctype)
    head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n" + extra + b"\r\n" + body


def sdp(addr: bytes = b"IN IP4 127.0.0.2", port: bytes = b"30000",
        formats: bytes = b"0 8 101", direction: bytes = b"sendrecv", extra: bytes = b"") -> bytes:
    return (b"v=0\r\no=- 2 2 IN IP4 127.0.0.2\r\ns=-\r\nc=" + addr + b"\r\nt=0 0\r\n"
            b"m=audio " + port + b" RTP/AVP " + formats + b"\r\na=rtpmap:0 PCMU/8000\r\n"
            b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            b"a=fmtp:101 0-16\r\na=" + direction + b"\r\n" + extra)


def reinvite(**kw: bytes) -> bytes:
    return request("INVITE", body=sdp(**kw), ctype=b"application/sdp")


def ack() -> bytes:
    return request("ACK", cseq=b"$INVCSEQ", branch=b"$BRANCH")


def cancel_last_invite() -> bytes:
    return request("CANCEL", cseq=b"$INVCSEQ", branch=b"$INVBRANCH")


def info(body: bytes = b"Signal=5\r\nDuration=160\r\n",
         ctype: bytes = b"application/dtmf-relay", **kw: bytes) -> bytes:
    return request("INFO", body=body, ctype=ctype, **kw)


def many_headers(n: int) -> bytes:
    return b"".join(b"X-H%d: v\r\n" % i for i in range(n))


def padding(n: int) -> bytes:
    return b"X-Pad: " + b"a" * n + b"\r\n"


# ------------------------------------------------------------------ atheris encoding
SEP = b"\r\n--step--\r\n"


def encode(steps: list[Step]) -> bytes:
    """Steps as one atheris input: each step's template after one control byte (low 5 bits:
    seconds to advance; bits 5-6: extra sends of the same datagram), joined by ``SEP``."""
    return SEP.join(bytes([min(int(s.advance), 31) | (min(s.repeat - 1, 3) << 5)]) + s.template
                    for s in steps)


def decode(data: bytes) -> list[Step]:
    steps = []
    for chunk in data.split(SEP)[:16]:
        if chunk:
            steps.append(Step(chunk[1:], 1 + ((chunk[0] >> 5) & 3), float(chunk[0] & 31)))
    return steps


def seed_sequences() -> list[list[Step]]:
    """Sequences a trusted peer could send in a live call, each one a known-good start."""
    return [
        [Step(info()), Step(request("OPTIONS"))],
        [Step(reinvite(direction=b"sendonly")), Step(ack()), Step(reinvite()), Step(ack())],
        [Step(reinvite(addr=b"IN IP4 127.000.000.002")), Step(ack())],
        [Step(reinvite(addr=b"IN IP6 ::1")), Step(ack())],
        [Step(reinvite(port=b"0")), Step(ack())],
        [Step(reinvite(formats=b"18")), Step(ack())],
        [Step(request("INVITE")), Step(ack())],  # offer-less re-INVITE
        [Step(reinvite(), advance=31.0), Step(b"", advance=31.0)],  # never ACKed
        [Step(reinvite()), Step(cancel_last_invite()), Step(ack())],
        [Step(request("BYE", to_tag=b"wrong")), Step(request("BYE", from_tag=b"x"))],
        [Step(request("BYE", cseq=b"1"))],
        [Step(request("BYE"), repeat=3)],
        [Step(request("UPDATE", body=sdp(), ctype=b"application/sdp")), Step(request("PRACK"))],
        [Step(request("MESSAGE", body=b"hi", ctype=b"text/plain")), Step(request("NOTIFY")),
         Step(request("REFER", extra=b"Refer-To: <sip:x@127.0.0.2>\r\n"))],
        [Step(info(extra=padding(3000))), Step(info(extra=many_headers(300)))],
        [Step(cancel_last_invite()), Step(request("CANCEL", cseq=b"1", branch=b"nope"))],
        [Step(info(body=b"Signal=*\r\n"), repeat=4, advance=2.0), Step(info(body=b"1",
                                                                        ctype=b"application/dtmf"))],
    ]
