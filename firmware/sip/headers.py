"""SIP header fields: the ordered multi-map and the structured values (RFC 3261 §7.3, §20, §25).

Owns compact forms, case-insensitive names, comma splitting that respects quotes and angle
brackets, and the typed values the user agent relies on: name-addr (From/To/Contact/Route),
Via, CSeq, and the bounded integers (Max-Forwards, Expires, Content-Length). Knows nothing
about start lines, transports or dialogs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from .errors import RemoteProtocolError
from .uri import SipUri, Uri, parse_uri

COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via",
    "o": "event", "r": "refer-to", "u": "allow-events", "x": "session-expires",
}
_CANONICAL = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "rseq": "RSeq", "rack": "RAck",
}
# Fields whose grammar is not a comma list (a comma may appear inside one value).
_NOT_COMMA_LISTS = {
    "www-authenticate", "authorization", "proxy-authenticate", "proxy-authorization", "date",
    "call-id", "cseq", "content-length", "max-forwards", "expires", "user-agent", "server",
    "subject", "organization", "content-type", "from", "to", "min-expires", "timestamp",
    "retry-after", "reply-to",
}
# Fields that RFC 3261 allows only once in a message (§20; §3.3.8 of RFC 4475).
SINGLE_VALUED = ("call-id", "cseq", "from", "to", "max-forwards", "content-length",
                 "content-type", "expires")
TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_DISPLAY_TOKENS = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*$")
MAX_INT32 = 2**31 - 1


@functools.lru_cache(maxsize=256)
def canonical_name(name: str) -> str:
    lower = name.lower()
    lower = COMPACT.get(lower, lower)
    return _CANONICAL.get(lower) or "-".join(p.capitalize() for p in lower.split("-"))


def split_commas(value: str) -> list[str]:
    """Split a header value at top-level commas (not inside quotes or <...>)."""
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(",")]
    parts, buf, quoted, angle, i = [], [], False, False, 0
    while i < len(value):
        ch = value[i]
        if quoted and ch == "\\" and i + 1 < len(value):
            buf.append(value[i: i + 2])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle = True
        elif not quoted and ch == ">":
            angle = False
        elif ch == "," and not quoted and not angle:
            parts.append("".join(buf).strip())
            buf = []
            i += 1
            continue
        buf.append(ch)
        i += 1
    parts.append("".join(buf).strip())
    return parts


class Headers:
    """Ordered, case-insensitive header multi-map. Keys are stored in canonical form."""

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items or ():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = canonical_name(name)
        self._items = [(k, v) for k, v in self._items if k != key]

    def get(self, name: str, default: str | None = None) -> str | None:
        key = canonical_name(name)
        for k, v in self._items:
            if k == key:
                return v
        return default

    def raw_all(self, name: str) -> list[str]:
        key = canonical_name(name)
        return [v for k, v in self._items if k == key]

    def get_all(self, name: str) -> list[str]:
        """All values of a field, comma lists split into separate values."""
        values = self.raw_all(name)
        if name.lower() in _NOT_COMMA_LISTS:
            return values
        return [part for v in values for part in split_commas(v) if part != ""]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new


def parse_params(text: str, where: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` (leading ';' optional). Empty parameters are an error."""
    params: dict[str, str | None] = {}
    text = text.strip()
    if not text:
        return params
    if text.startswith(";"):
        text = text[1:]
    for item in _split_semicolons(text):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not TOKEN.match(name):
            raise RemoteProtocolError(f"malformed parameter {item!r} in {where}")
        if sep and not value:
            raise RemoteProtocolError(f"empty value for parameter {name!r} in {where}")
        params[name.lower()] = value if sep else None
    return params


def _split_semicolons(text: str) -> list[str]:
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quoted:
        raise RemoteProtocolError("unterminated quoted string in parameters")
    out.append("".join(buf))
    return out


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote(text: str) -> str:
    """Remove surrounding quotes and backslash escapes from a quoted-string."""
    if not (len(text) >= 2 and text[0] == '"' and text[-1] == '"'):
        return text
    out, i, body = [], 0, text[1:-1]
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            i += 1
        out.append(body[i])
        i += 1
    return "".join(out)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class NameAddr:
    """From/To/Contact/Route value: optional display name, a URI and header parameters."""

    uri: Uri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        return replace(self, params={**self.params, "tag": tag})

    def __str__(self) -> str:
        display = f"{quote(self.display)} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def _scan_quoted(text: str, start: int) -> int:
    """Index just past the closing quote of the quoted-string starting at ``start``."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    raise RemoteProtocolError("unterminated quoted string")


def parse_name_addr(value: str) -> NameAddr:
    text = value.strip()
    if not text:
        raise RemoteProtocolError("empty address")
    display: str | None = None
    if text.startswith('"'):
        end = _scan_quoted(text, 0)
        display = unquote(text[:end])
        text = text[end:].lstrip()
        if not text.startswith("<"):
            raise RemoteProtocolError(f"quoted display name without <URI> in {value!r}")
    lt = text.find("<")
    if lt >= 0:
        name = text[:lt].strip()
        if name:
            if display is not None or not _DISPLAY_TOKENS.match(name):
                raise RemoteProtocolError(f"display name must be tokens or quoted: {value!r}")
            display = name
        gt = text.find(">", lt)
        if gt < 0:
            raise RemoteProtocolError(f"missing '>' in {value!r}")
        inner = text[lt + 1: gt]
        if inner != inner.strip() or not inner:
            raise RemoteProtocolError(f"whitespace inside <URI> in {value!r}")
        return NameAddr(parse_uri(inner), display, parse_params(text[gt + 1:], value))
    # addr-spec form: everything after the first ';' is a header parameter (§20.10)
    uri_text, _, param_text = text.partition(";")
    uri_text = uri_text.strip()
    if any(c in uri_text for c in " \t,?"):
        raise RemoteProtocolError(f"addr-spec with spaces, commas or '?' must use <>: {value!r}")
    return NameAddr(parse_uri(uri_text), None, parse_params(param_text, value))


@dataclass(frozen=True)
class Via:
    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int]:
        return self.host, self.port or 5060

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


_VIA = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+([^\s;:]+|\[[^\]]+\])"
                  r"(?:\s*:\s*([0-9]{1,5}))?\s*(;.*)?$", re.S)


def parse_via(value: str) -> Via:
    m = _VIA.match(value.strip())
    if not m:
        raise RemoteProtocolError(f"malformed Via {value!r}")
    port = int(m.group(3)) if m.group(3) else None
    if port is not None and not 0 < port <= 65535:
        raise RemoteProtocolError(f"Via port out of range in {value!r}")
    return Via(m.group(1).upper(), m.group(2).lower(), port, parse_params(m.group(4) or "", value))


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not is_ascii_digits(parts[0], 10) or not TOKEN.match(parts[1]):
        raise RemoteProtocolError(f"malformed CSeq {value[:80]!r}")
    number = int(parts[0])
    if number > MAX_INT32:
        raise RemoteProtocolError(f"CSeq number too large in {value!r}")
    return CSeq(number, parts[1])


def is_ascii_digits(text: str, max_len: int) -> bool:
    """1..max_len ASCII digits. ``str.isdigit`` accepts '²' and other digits ``int`` refuses,
    and ``int`` refuses more than 4,300 digits: every number read from the wire goes here."""
    return 0 < len(text) <= max_len and text.isascii() and text.isdigit()


def parse_uint(value: str, name: str, maximum: int) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise RemoteProtocolError(f"{name} is not a number: {value[:80]!r}")
    if len(text) > 12 or int(text) > maximum:
        raise RemoteProtocolError(f"{name} out of range: {value[:80]!r}")
    return int(text)


def uint_or_none(value: str | None, maximum: int) -> int | None:
    """A bounded unsigned integer, or None when ``value`` is missing or is not one."""
    if value is None:
        return None
    text = value.strip()
    if not is_ascii_digits(text, 12) or int(text) > maximum:
        return None
    return int(text)


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``Digest realm="x", nonce="y"`` -> ("digest", {"realm": "x", ...}); names lower-case."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    for item in split_commas(rest):
        if not item:
            continue
        name, sep, val = (s.strip() for s in item.partition("="))
        if not sep or not TOKEN.match(name):
            raise RemoteProtocolError(f"malformed auth parameter {item!r}")
        params[name.lower()] = unquote(val)
    return scheme.lower(), params


def contact_uri(value: str) -> SipUri | None:
    """The SIP URI of a Contact value, or None when it is not a SIP URI."""
    uri = parse_name_addr(value).uri
    return uri if isinstance(uri, SipUri) else None
