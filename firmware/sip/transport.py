"""The SIP transports the box speaks, as one table (re's ``sip_transp_*``).

Owns what every layer must know about a transport, by its configuration name: whether it is
reliable (no retransmissions, Content-Length framing, CRLF keep-alive), its Via token, its URI
``transport`` parameter, its default port, whether it is secure (signalling encrypted, SRTP
demanded by default), its RFC 3263 NAPTR service and SRV label, and whether the box listens on
``sip.local_port`` for it (the firewall opens that port) or only connects out. The
configuration, the fleet tools, the firewall, the RFC 3263 target order (``sip/targets.py``)
and the user agent read these names and facts from here and nowhere else; ``firmware/net.py``
has one adapter per name. A new transport is one entry here and one adapter there. Knows
nothing about sockets or certificates.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Transport:
    name: str  # as in the configuration (sip.transport) and the fleet inventory
    reliable: bool
    via: str  # the Via sent-protocol token (RFC 3261 §20.42)
    uri_param: str | None  # ;transport= in our Contact (None: the default, UDP)
    default_port: int  # sip.port when not given
    secure: bool  # signalling is encrypted and the server's certificate verified
    listens: bool  # the box receives on sip.local_port (else: one connection out to the PBX)
    naptr: str  # RFC 3263 §4.1: the NAPTR service that names it
    srv: str  # RFC 3263 §4.1: the SRV label its server records are under


TRANSPORTS: dict[str, Transport] = {
    "udp": Transport("udp", False, "UDP", None, 5060, False, True, "SIP+D2U", "_sip._udp"),
    "tcp": Transport("tcp", True, "TCP", "tcp", 5060, False, False, "SIP+D2T", "_sip._tcp"),
    # RFC 5630 deprecates ;transport=tls in favour of sips:, but a sips: Contact obliges every
    # hop to TLS; Asterisk, baresip and pjsua all register sip:...;transport=tls, so do we.
    "tls": Transport("tls", True, "TLS", "tls", 5061, True, False, "SIPS+D2T", "_sips._tcp"),
}


def transport(name: str) -> Transport:
    try:
        return TRANSPORTS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown SIP transport {name!r} "
                         f"(known: {', '.join(TRANSPORTS)})") from None
