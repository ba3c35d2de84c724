"""The one IP-address parser of the firmware: SIP, SDP, the media core and the configuration
all ask it, so they all give the same answer for the same text.

Owns what counts as an IP address literal: a strict dotted quad (four decimal parts 0-255,
ASCII digits, no leading zeros, so no octal or hexadecimal reading is possible), or an IPv6
address without a zone index; the answer is the address in its canonical form, or None.
A text made only of digits and dots is an address or nothing: it is never a host name (the C
library would read ``010.0.0.1`` as octal, 8.0.0.1, and ``1.2.3`` as 1.2.0.3). Knows nothing
about sockets, name resolution, SIP or SDP; imports nothing from the firmware.
"""

from __future__ import annotations

import ipaddress

_MAX_IPV4 = len("255.255.255.255")
_MAX_IPV6 = len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")
_DIGITS = frozenset("0123456789")
_DOTTED = frozenset("0123456789.")


def ipv4(text: str) -> str | None:
    """``text`` if it is a strict dotted quad (``192.0.2.1``), else None."""
    if not isinstance(text, str) or not 7 <= len(text) <= _MAX_IPV4:
        return None
    parts = text.split(".")
    if len(parts) != 4:
        return None
    for part in parts:
        if not 1 <= len(part) <= 3 or not _DIGITS.issuperset(part):
            return None
        if part[0] == "0" and len(part) > 1:  # 010 would be octal to inet_aton
            return None
        if int(part) > 255:
            return None
    return text


def ipv6(text: str) -> str | None:
    """The canonical (compressed, lower-case) form of an IPv6 address, else None. No brackets,
    no zone index (``fe80::1%eth0``): a zone names an interface of one host, not a peer."""
    if not isinstance(text, str) or not 2 <= len(text) <= _MAX_IPV6 or "%" in text:
        return None
    if not text.isascii() or ":" not in text:
        return None
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def ip(text: str) -> str | None:
    """An IPv4 or IPv6 address in canonical form, else None. An IPv4-mapped IPv6 address
    (``::ffff:192.0.2.1``) is that IPv4 host and is answered in its dotted form."""
    v4 = ipv4(text)
    if v4 is not None:
        return v4
    v6 = ipv6(text)
    if v6 is None:
        return None
    mapped = ipaddress.IPv6Address(v6).ipv4_mapped
    return str(mapped) if mapped is not None else v6


def looks_numeric(text: str) -> bool:
    """Only digits and dots (and at least one digit): such a text is an IPv4 address or
    malformed, never a host name to resolve."""
    return bool(text) and _DOTTED.issuperset(text) and not set(text) <= {"."}


def is_unicast_ipv4(text: str) -> bool:
    """A strict dotted quad a stream may send to: not multicast (224/4), not the limited
    broadcast, not the unspecified 0.0.0.0."""
    if ipv4(text) is None:
        return False
    first = int(text.split(".", 1)[0])
    return text not in ("0.0.0.0", "255.255.255.255") and not 224 <= first <= 239


def _dns_name(text: str) -> bool:
    """Letters, digits and '-' in dot-separated labels of 1..63, 253 at most, not numeric."""
    if not 1 <= len(text.rstrip(".")) <= 253 or looks_numeric(text):
        return False
    labels = text.rstrip(".").split(".")
    return all(1 <= len(label) <= 63 and label[0] != "-" and label[-1] != "-"
               and all(c.isascii() and (c.isalnum() or c in "-_") for c in label)
               for label in labels)


def host_port(text: str) -> tuple[str, int | None] | None:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port or None); a bare IPv6
    address has no port. The host is an address (canonical form) or a DNS name; None for
    anything else (a port outside 1..65535 included)."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1:]
        if ipv6(host) is None:
            return None
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is not None:
        if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535 or \
                len(port) > 5:
            return None
    address = ip(host)
    if address is None and not _dns_name(host):
        return None
    return (address or host.rstrip(".").lower()), (int(port) if port is not None else None)
