"""SIP and generic URIs (RFC 3261 §19.1, §25.1).

Owns parsing, validation and serialisation of ``sip:``/``sips:`` URIs, and a opaque holder for
any other absolute URI (``tel:``, ``http:``, ``isbn:``...) so that unknown schemes in header
fields are carried, not rejected. Knows nothing about messages or transports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..address import ip, ipv4, ipv6, looks_numeric
from .errors import RemoteProtocolError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_HOSTNAME = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?$")
# user part: unreserved / escaped / user-unreserved (RFC 3261 §25.1), plus ';' seen in §3.1.1.9
_USER = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
_PASSWORD = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*$")
_PARAM = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+$")
_URIC = re.compile(r"^[^\s<>\"]*$")


def is_ip_literal(host: str) -> bool:
    """An IPv4 or IPv6 address rather than a name (a name may resolve elsewhere later),
    judged by ``firmware.address`` like SDP and the media core judge it."""
    if host.startswith("[") and host.endswith("]"):
        return ipv6(host[1:-1]) is not None
    return ip(host) is not None


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        return host.endswith("]") and ipv6(host[1:-1]) is not None
    if looks_numeric(host):  # digits and dots: an address or nothing (010.0.0.1 is no name)
        return ipv4(host) is not None
    return bool(_HOSTNAME.match(host))


@dataclass(frozen=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI. Parameter names are stored lower-case; ``None`` = flag."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    password: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    @property
    def transport(self) -> str:
        value = self.params.get("transport")
        return (value or "udp").lower()

    def with_params(self, **params: str | None) -> SipUri:
        merged = dict(self.params)
        merged.update(params)
        return replace(self, params=merged)

    def without_headers(self) -> SipUri:
        return replace(self, headers={})


@dataclass(frozen=True)
class AbsoluteUri:
    """Any URI whose scheme we do not interpret; kept verbatim."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | AbsoluteUri


def _parse_params(text: str, where: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not name or not _PARAM.match(name) or (sep and not _PARAM.match(value)):
            raise RemoteProtocolError(f"malformed parameter {item!r} in {where}")
        params[name.lower()] = value if sep else None
    return params


def parse_uri(text: str) -> Uri:
    """Parse any absolute URI; ``sip``/``sips`` are fully validated."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme) or not rest:
        raise RemoteProtocolError(f"not a URI: {text!r}")
    if scheme.lower() not in ("sip", "sips"):
        if not _URIC.match(rest):
            raise RemoteProtocolError(f"invalid characters in URI {text!r}")
        return AbsoluteUri(scheme.lower(), rest)
    return _parse_sip(scheme.lower(), rest, text)


def parse_sip_uri(text: str) -> SipUri:
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        raise RemoteProtocolError(f"unsupported URI scheme in {text!r}", status=416)
    return uri


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    if not _URIC.match(rest):
        raise RemoteProtocolError(f"invalid characters in URI {text!r}")
    rest, _, header_text = rest.partition("?")
    headers: dict[str, str] = {}
    if header_text:
        for item in header_text.split("&"):
            name, sep, value = item.partition("=")
            if not name or not sep:
                raise RemoteProtocolError(f"malformed URI header {item!r} in {text!r}")
            headers[name] = value
    user = password = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, sep, pw = userinfo.partition(":")
        if not _USER.match(user) or (sep and not _PASSWORD.match(pw)):
            raise RemoteProtocolError(f"malformed user part in {text!r}")
        password = pw if sep else None
    hostport, _, param_text = rest.partition(";")
    params = _parse_params(param_text, text)
    port = None
    if hostport.startswith("["):
        end = hostport.find("]")
        host, port_text = hostport[: end + 1], hostport[end + 1:]
        if port_text and not port_text.startswith(":"):
            raise RemoteProtocolError(f"malformed host in {text!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host or not _valid_host(host):
        raise RemoteProtocolError(f"malformed host {host!r} in {text!r}")
    if port_text:
        if not (len(port_text) <= 5 and port_text.isascii() and port_text.isdigit()) or \
                not 0 < int(port_text) <= 65535:
            raise RemoteProtocolError(f"malformed port in {text!r}")
        port = int(port_text)
    return SipUri(host=host.lower(), user=user, port=port, scheme=scheme,
                  password=password, params=params, headers=headers)
