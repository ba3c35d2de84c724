"""SIP dialogs (RFC 3261 §12): identity, CSeq spaces, route set, remote target.

Owns the creation of a dialog from either side of an INVITE, building in-dialog requests
(loose and strict routing), CSeq ordering of incoming requests (a BYE is never refused for its
CSeq) and target refresh. Knows
nothing about transactions, media or sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import RemoteProtocolError
from .headers import NameAddr, parse_name_addr
from .message import Request, Response, validate_reused

CSEQ_JUMP = 1000  # a peer counts up by one per request; further ahead is counted as odd


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local: NameAddr
    remote: NameAddr
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.call_id, self.local_tag, self.remote_tag

    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """Dialog of the caller, from the INVITE and a 2xx/1xx with a To tag (§12.1.2)."""
        to = response.to
        if not to.tag:
            raise RemoteProtocolError("response creating a dialog has no To tag")
        validate_reused(response)
        routes = list(reversed(response.headers.get_all("Record-Route")))
        return cls(request.call_id, request.from_.tag or "", to.tag,
                   request.from_, to, _target(response, request.uri), routes,
                   request.cseq.number, None)

    @classmethod
    def from_uas(cls, request: Request, local_tag: str) -> Dialog:
        """Dialog of the callee, from the INVITE it answers (§12.1.1)."""
        frm = request.from_
        validate_reused(request)
        return cls(request.call_id, local_tag, frm.tag or "", request.to.with_tag(local_tag),
                   frm, _target(request, str(frm.uri)), request.headers.get_all("Record-Route"),
                   0, request.cseq.number)

    def create_request(self, method: str, cseq: int | None = None) -> Request:
        """A request inside the dialog, without Via (the user agent adds it)."""
        if cseq is None and method not in ("ACK", "CANCEL"):
            self.local_cseq += 1
        number = self.local_cseq if cseq is None else cseq
        uri, routes = self.remote_target, list(self.route_set)
        if routes and ";lr" not in routes[0]:  # strict router (§12.2.1.1)
            uri = str(parse_name_addr(routes[0]).uri)
            routes = routes[1:] + [f"<{self.remote_target}>"]
        req = Request(method=method, uri=uri)
        for route in routes:
            req.headers.add("Route", route)
        req.headers.add("Max-Forwards", "70")
        req.headers.add("From", str(self.local))
        req.headers.add("To", str(self.remote))
        req.headers.add("Call-ID", self.call_id)
        req.headers.add("CSeq", f"{number} {method}")
        return req

    def receive_request(self, req: Request) -> str | None:
        """Check CSeq order and apply target refresh (§12.2.2).

        A higher CSeq is no error, however far ahead (RFC 3261 only asks for more than the
        last); a lower or equal one is refused with 500 — except on a BYE, which is always
        taken: one request far ahead must not leave the peer unable to end the call. Returns
        what was odd, for counting: "jump" (more than ``CSEQ_JUMP`` ahead), "lower_bye"."""
        number = req.cseq.number
        odd = None
        if req.method not in ("ACK", "CANCEL"):
            last = self.remote_cseq
            if last is not None and number <= last:
                if req.method != "BYE":
                    raise RemoteProtocolError("CSeq lower than the last one in this dialog", 500)
                return "lower_bye"  # the space keeps its highest number
            if last is not None and number - last > CSEQ_JUMP:
                odd = "jump"
            self.remote_cseq = number
        if req.method == "INVITE":
            self.remote_target = _target(req, self.remote_target)
        return odd

    def refresh_target(self, response: Response) -> None:
        self.remote_target = _target(response, self.remote_target)


def _target(msg: Request | Response, fallback: str) -> str:
    """The Contact URI; RFC 2543 peers may omit Contact, then ``fallback`` is used."""
    contacts = msg.contacts
    return str(contacts[0].uri) if contacts else fallback
