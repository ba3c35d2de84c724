"""SIP messages: start lines, framing, parsing and serialisation (RFC 3261 §7, §18.3, §25).

Owns Request/Response objects, datagram parsing (Content-Length may shorten the body; extra
octets are ignored), stream framing for TCP (Content-Length mandatory, CRLF keep-alives
skipped), the size and header-count caps, the bounded scan of the few fields a stateless reply
echoes (for strangers and for messages too large to parse), and the structural checks a UAS
makes before it trusts a request. Knows nothing about transactions, dialogs or sockets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import RemoteProtocolError
from .headers import (
    SINGLE_VALUED,
    TOKEN,
    CSeq,
    Headers,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_uint,
    parse_via,
)
from .uri import SipUri, Uri, parse_uri

MAX_MESSAGE_SIZE = 65535  # the parser's ceiling (and a stream frame's); the UA sets its own
DEFAULT_MAX_MESSAGE = 8192  # sip.max_message_size: a few KB is plenty for SIP to a door
MAX_HEADER_FIELDS = 128  # header lines per message (each costs ~100 bytes once parsed)
MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4 (RFC 768 / RFC 791)
# the bounded scan of echo_fields: how far into a message it looks, how long a field may be
ECHO_SCAN = 4096
ECHO_FIELD_MAX = 512
ECHO_MAX_VIAS = 16
REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
}
_VERSION = re.compile(r"^SIP/([0-9]+)\.([0-9]+)$")
_STATUS = re.compile(r"^[1-6][0-9][0-9]$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_DATE = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")


@dataclass
class Message:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    # -- typed accessors (raise RemoteProtocolError when the field is missing or malformed)
    def _require(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise RemoteProtocolError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        return self._require("Call-ID").strip()

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self._require("CSeq"))

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self._require("From"))

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self._require("To"))

    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        vias = self.headers.get_all("Via")
        if not vias:
            raise RemoteProtocolError("missing Via header")
        return parse_via(vias[0])

    @property
    def contacts(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.headers.get_all("Contact") if v.strip() != "*"]

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise with a correct Content-Length (always written, required on TCP)."""
        lines = [self._start_line()]
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body


@dataclass
class Request(Message):
    method: str = "OPTIONS"
    uri: str = "sip:invalid"

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    @property
    def parsed_uri(self) -> Uri:
        return parse_uri(self.uri)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


@dataclass
class Response(Message):
    status: int = 200
    reason: str = "OK"

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = data.find(sep)
        if idx >= 0:
            return data[:idx], data[idx + len(sep):]
    if data.endswith(b"\n"):  # datagram ending right after the last header line
        return data.rstrip(b"\r\n"), b""
    raise RemoteProtocolError("no empty line after the header fields")


def _parse_start_line(line: str) -> Request | Response:
    if line.startswith("SIP/"):
        version, sp1, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not sp1 or not _STATUS.match(code):
            raise RemoteProtocolError(f"malformed status line {line!r}")
        if version != "SIP/2.0":
            raise RemoteProtocolError(f"unsupported version in {line!r}", status=505)
        return Response(status=int(code), reason=reason)
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise RemoteProtocolError(f"malformed request line {line!r}")
    method, uri, version = parts
    if not TOKEN.match(method):
        raise RemoteProtocolError(f"malformed method in {line!r}")
    if uri.startswith("<") or any(c in uri for c in "\t<>"):
        raise RemoteProtocolError(f"malformed Request-URI {uri!r}")
    if not _VERSION.match(version):
        raise RemoteProtocolError(f"malformed version in {line!r}")
    if version != "SIP/2.0":
        raise RemoteProtocolError(f"unsupported version {version!r}", status=505)
    return Request(method=method, uri=uri)


class MalformedMessageError(RemoteProtocolError):
    """A message that could not be parsed. ``headers`` holds what could be read of the header
    section (or None) so that a UAS can still answer a malformed request with 400 or 505."""

    def __init__(self, reason: str, status: int, headers: Headers | None,
                 is_request: bool) -> None:
        super().__init__(reason, status)
        self.headers = headers
        self.is_request = is_request


def _parse_header_lines(text: str, max_fields: int = MAX_HEADER_FIELDS) -> Headers:
    headers = Headers()
    name: str | None = None
    value_parts: list[str] = []
    if text.count("\n") >= max_fields:  # folded lines count too: the cap is on work
        raise RemoteProtocolError(f"more than {max_fields} header lines", 513)
    for raw in re.split(r"\r?\n", text):
        if raw[:1] in (" ", "\t"):
            if name is None:
                raise RemoteProtocolError("continuation line before any header field")
            value_parts.append(raw.strip())
            continue
        if name is not None:
            headers.add(name, " ".join(value_parts))
        hname, colon, value = raw.partition(":")
        hname = hname.rstrip(" \t")
        if not colon or not _HEADER_NAME.match(hname):
            raise RemoteProtocolError(f"malformed header line {raw[:60]!r}")
        name, value_parts = hname, [value.strip()]
    if name is not None:
        headers.add(name, " ".join(value_parts))
    return headers


def parse_message(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE,
                  stream: bool = False) -> Request | Response:
    """Parse one datagram (or one framed stream message) into a Request or Response.

    Raises MalformedMessageError, carrying whatever header fields could be read.
    """
    is_request = not data.startswith(b"SIP/")
    if len(data) > max_size:
        raise MalformedMessageError(f"message of {len(data)} bytes exceeds {max_size}", 513, None,
                               is_request)
    headers: Headers | None = None
    try:
        head, body = _split_head(data)
        text = head.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
        start_line, _, rest = text.partition("\n")
        headers = _parse_header_lines(rest) if rest else Headers()
        msg = _parse_start_line(start_line)
        msg.headers = headers
        msg.body = _body(headers, body, max_size, stream)
        return msg
    except MalformedMessageError:
        raise
    except RemoteProtocolError as exc:
        raise MalformedMessageError(exc.reason, exc.status, headers, is_request) from exc


def _body(headers: Headers, body: bytes, max_size: int, stream: bool) -> bytes:
    lengths = headers.raw_all("Content-Length")
    if len(lengths) > 1:
        raise RemoteProtocolError("several Content-Length header fields")
    if lengths:
        length = parse_uint(lengths[0], "Content-Length", max_size)
        if length > len(body):
            raise RemoteProtocolError(
                f"Content-Length {length} larger than the {len(body)} body bytes received")
        return body[:length]
    if stream:
        raise RemoteProtocolError("Content-Length is mandatory on stream transports")
    return body


class StreamParser:
    """Frames SIP messages on a byte stream (TCP): CRLF keep-alives, Content-Length, size cap."""

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self.max_size = max_size
        self.pings = 0  # double-CRLF keep-alives seen (RFC 5626 §3.5.1)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete message. Raises when the stream is unrecoverable."""
        self._buf += data
        out: list[bytes] = []
        while True:
            while self._buf[:2] == b"\r\n":
                if self._buf[:4] == b"\r\n\r\n":
                    self.pings += 1
                    del self._buf[:4]
                else:
                    del self._buf[:2]
            idx = self._buf.find(b"\r\n\r\n")
            if idx < 0:
                if len(self._buf) > self.max_size:
                    raise RemoteProtocolError("header section exceeds the size cap", 513)
                return out
            head = bytes(self._buf[:idx])
            m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d{1,9})[ \t]*$", head)
            if not m:
                raise RemoteProtocolError("Content-Length is mandatory on stream transports")
            total = idx + 4 + int(m.group(1))
            if total > self.max_size:
                raise RemoteProtocolError(f"message of {total} bytes exceeds the size cap", 513)
            if len(self._buf) < total:
                return out
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]


def validate_request(req: Request) -> None:
    """The checks a UAS makes before acting on a request (RFC 3261 §8.2, RFC 4475 §3.1.2, §3.3).

    Raises RemoteProtocolError with the status code to answer.
    """
    h = req.headers
    for name in ("To", "From", "Call-ID", "CSeq", "Via"):
        if h.get(name) is None:
            raise RemoteProtocolError(f"missing {name} header")
    for name in SINGLE_VALUED:
        if len(h.raw_all(name)) > 1:
            raise RemoteProtocolError(f"several values in single-valued {name} header")
    cseq = req.cseq
    if cseq.method != req.method:
        raise RemoteProtocolError(f"CSeq method {cseq.method} does not match {req.method}")
    req.from_  # noqa: B018 - parse for validation
    req.to  # noqa: B018
    vias = h.get_all("Via")
    if not vias:
        raise RemoteProtocolError("empty Via header")
    for via in vias:
        parse_via(via)
    validate_reused(req)
    for contact in h.get_all("Contact"):
        if contact.strip() != "*":
            na = parse_name_addr(contact)
            if "expires" in na.params:
                parse_uint(na.params["expires"] or "", "Contact expires", 2**32 - 1)
    if (mf := h.get("Max-Forwards")) is not None:
        parse_uint(mf, "Max-Forwards", 255)
    if (exp := h.get("Expires")) is not None:
        parse_uint(exp, "Expires", 2**32 - 1)
    if (date := h.get("Date")) is not None and not _DATE.match(date.strip()):
        raise RemoteProtocolError(f"malformed Date {date!r}")
    if (ctype := h.get("Content-Type")) is not None and "/" not in ctype:
        raise RemoteProtocolError(f"malformed Content-Type {ctype!r}")
    uri = req.parsed_uri
    if getattr(uri, "headers", None):
        raise RemoteProtocolError("header fields are not allowed in a Request-URI")


def validate_reused(msg: Message) -> None:
    """Check the fields a user agent copies into later requests (route set, remote target):
    each Record-Route must be a SIP URI in <>, and so must a dialog-creating Contact.

    Checked on arrival so that a BYE can always be built later (RFC 3261 §12.1, §20.30)."""
    for route in msg.headers.get_all("Record-Route"):
        na = parse_name_addr(route)
        if "<" not in route or not isinstance(na.uri, SipUri):
            raise RemoteProtocolError(f"unusable Record-Route {route[:80]!r}")
    method = msg.method if isinstance(msg, Request) else msg.cseq.method
    if method == "INVITE":
        contacts = [c for c in msg.headers.get_all("Contact") if c.strip() != "*"]
        if contacts and not isinstance(parse_name_addr(contacts[0]).uri, SipUri):
            raise RemoteProtocolError(f"Contact is not a SIP URI: {contacts[0][:80]!r}", 416)


class Serialized(Response):
    """A final response kept only as the bytes it was sent as: what an answered server
    transaction needs to repeat it to a retransmission, without its parsed header fields."""

    def __init__(self, status: int, data: bytes) -> None:
        super().__init__(status=status, reason="")
        self.data = data

    def to_bytes(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"<Serialized {self.status}, {len(self.data)} bytes>"


@dataclass(frozen=True)
class EchoFields:
    """The fields a stateless reply copies from a request, as the raw bytes that came in."""

    method: bytes
    vias: tuple[bytes, ...]
    from_: bytes
    to: bytes
    call_id: bytes
    cseq: bytes


_ECHO_NAMES = {b"via": "via", b"v": "via", b"from": "from", b"f": "from", b"to": "to",
               b"t": "to", b"call-id": "call-id", b"i": "call-id", b"cseq": "cseq"}
_REQUEST_LINE = re.compile(rb"^([A-Za-z]{1,16}) [^ \x00-\x1f]{1,512} SIP/2\.0\r\n")
# an echo field's line: found by one C-level scan, the rest of the message is never looked at
_ECHO_LINE = re.compile(rb"\r\n(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:[ \t]*([^\r\n]*)",
                        re.IGNORECASE)
_ECHO_CSEQ = re.compile(rb"^[0-9]{1,10}[ \t]+([A-Za-z]{1,16})$")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def echo_fields(data: bytes, scan: int = ECHO_SCAN) -> EchoFields | None:
    """The request line's method and Via/From/To/Call-ID/CSeq of a request, read from at most
    its first ``scan`` bytes without parsing anything else (strangers, and messages over the
    size cap, cost this much and no more). None when one is missing, repeated where it may not
    be, folded, longer than ``ECHO_FIELD_MAX``, holds control characters, or when the CSeq
    method differs from the request's: then nothing is worth answering."""
    start = _REQUEST_LINE.match(data)
    if start is None:
        return None
    window = data[:scan]
    end = window.find(b"\r\n\r\n")
    # the header section, or what of it the window holds in whole lines (+ the line break
    # that ends the last one, so that a folded continuation after it can be seen)
    head = window[:end + 2] if end >= 0 else window[:window.rfind(b"\r\n") + 2]
    found: dict[str, bytes] = {}
    vias: list[bytes] = []
    for m in _ECHO_LINE.finditer(head, start.end() - 2):
        if data[m.end() + 2:m.end() + 3] in (b" ", b"\t"):
            return None  # a folded echo field: not worth unfolding for a refusal
        name, value = _ECHO_NAMES[m.group(1).lower()], m.group(2).rstrip(b" \t")
        if not value or len(value) > ECHO_FIELD_MAX or _CONTROL.search(value):
            return None
        if name == "via":
            vias.append(value)
            if len(vias) > ECHO_MAX_VIAS:
                return None
        elif name in found:
            return None
        else:
            found[name] = value
    if not vias or len(found) != 4 or not vias[0].upper().startswith(b"SIP/2.0/"):
        return None
    cseq = _ECHO_CSEQ.match(found["cseq"])
    if cseq is None or cseq.group(1) != start.group(1):
        return None
    return EchoFields(start.group(1), tuple(vias), found["from"], found["to"],
                      found["call-id"], found["cseq"])


def echo_reply(fields: EchoFields, status: int, to_tag: str | None = None) -> bytes:
    """A stateless response built from ``echo_fields`` only (RFC 3261 §8.2.6.2 minus what we
    did not read): the Vias, From, To (with ``to_tag`` added when it has none), Call-ID, CSeq."""
    to = fields.to
    if to_tag and b";tag=" not in to.replace(b" ", b"").lower():
        to += b";tag=" + to_tag.encode("ascii")
    lines = [f"SIP/2.0 {status} {REASONS.get(status, 'Unknown')}".encode("ascii")]
    lines += [b"Via: " + via for via in fields.vias]
    lines += [b"From: " + fields.from_, b"To: " + to, b"Call-ID: " + fields.call_id,
              b"CSeq: " + fields.cseq, b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"
