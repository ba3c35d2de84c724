"""The SIP transports the box speaks, as one table (re's ``sip_transp_*``).

Owns what the SIP layer must know about a transport: whether it is reliable (no
retransmissions, Content-Length framing, CRLF keep-alive), its Via token, its URI ``transport``
parameter, its default port and whether it is secure. A new transport is one entry here and
one adapter class in ``firmware/net.py``. Knows nothing about sockets or certificates.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Transport:
    name: str  # as in the configuration: udp | tcp | tls
    reliable: bool
    via: str  # the Via sent-protocol token (RFC 3261 §20.42)
    uri_param: str | None  # ;transport= in our Contact (None: the default, UDP)
    default_port: int
    secure: bool  # TLS: signalling is encrypted and the server's certificate verified


TRANSPORTS: dict[str, Transport] = {
    "udp": Transport("udp", False, "UDP", None, 5060, False),
    "tcp": Transport("tcp", True, "TCP", "tcp", 5060, False),
    # RFC 5630 deprecates ;transport=tls in favour of sips:, but a sips: Contact obliges every
    # hop to TLS; Asterisk, baresip and pjsua all register sip:...;transport=tls, so do we.
    "tls": Transport("tls", True, "TLS", "tls", 5061, True),
}


def transport(name: str) -> Transport:
    try:
        return TRANSPORTS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown SIP transport {name!r} "
                         f"(known: {', '.join(TRANSPORTS)})") from None
