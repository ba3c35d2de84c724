"""Whether the kernel can send the box's RTP packets at their times (kernel pacing).

Owns one question, asked of the kernel over rtnetlink when a call's media starts: which
interface the packets to the peer leave by (a route lookup, ``RTM_GETROUTE``) and whether the
queueing discipline at its root holds a datagram stamped with a departure time until then —
``fq`` does (its earliest-departure-time mode, for sockets with ``SO_TXTIME``), and so does an
``mq`` root whose every queue is ``fq``; anything else (``noqueue`` on loopback, ``pfifo_fast``,
``fq_codel``, ``etf`` on another clock) sends a stamped packet at once, so there the media loop
paces the packets itself. Read-only: it changes no qdisc (the image puts ``fq`` on its
interfaces). Knows nothing about RTP, the media loop or configuration.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

NETLINK_ROUTE = 0
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_NEWQDISC, RTM_GETQDISC = 36, 38
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTA_DST, RTA_OIF = 1, 4
TCA_KIND = 1
TC_H_ROOT = 0xFFFFFFFF
_NLMSG = struct.Struct("=IHHII")   # length, type, flags, sequence, port
_RTMSG = struct.Struct("=BBBBBBBBI")
_TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info
_RTA = struct.Struct("=HH")
_PACING_QDISCS = frozenset({"fq"})


@dataclass(frozen=True)
class Egress:
    """The way out to one address: the interface and what its root qdisc does with a packet's
    departure time."""

    device: str
    qdisc: str          # the root qdisc's kind ("mq(fq)" for a multi-queue root of fq)
    kernel_paces: bool  # a datagram with SO_TXTIME leaves at its time, not at once


def egress(address: str) -> Egress | None:
    """The way out to ``address`` (a dotted quad), or None when the kernel will not say (no
    route, netlink refused): the caller then paces in the loop, as everywhere else."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as nl:
            nl.settimeout(1.0)
            ifindex = _route_oif(nl, socket.inet_aton(address))
            if ifindex is None:
                return None
            device = socket.if_indextoname(ifindex)
            qdiscs = _qdiscs(nl, ifindex)
    except (OSError, ValueError):
        return None
    kind, paces = _root_pacing(qdiscs)
    return Egress(device, kind, paces)


def _root_pacing(qdiscs: list[tuple[int, int, str]]) -> tuple[str, bool]:
    """The root's kind and whether it paces, from an interface's (handle, parent, kind)s."""
    root = next(((h, k) for h, p, k in qdiscs if p == TC_H_ROOT), None)
    if root is None:
        return "none", False
    handle, kind = root
    if kind != "mq":
        return kind, kind in _PACING_QDISCS
    children = {k for h, p, k in qdiscs if p >> 16 == handle >> 16 and p != TC_H_ROOT}
    label = "mq(" + ",".join(sorted(children)) + ")"
    return label, bool(children) and children <= _PACING_QDISCS


def _attrs(data: bytes, offset: int) -> dict[int, bytes]:
    """A netlink message's attributes from ``offset`` (the first of a type wins)."""
    out: dict[int, bytes] = {}
    while offset + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size or offset + length > len(data):
            break
        out.setdefault(kind & 0x3FFF, data[offset + _RTA.size:offset + length])
        offset += (length + 3) & ~3
    return out


def _exchange(nl: socket.socket, kind: int, flags: int, body: bytes, seq: int):
    """Send one request; yield (type, payload) of each reply until the answer is complete."""
    nl.send(_NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
    while True:
        data = nl.recv(65536)
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length, mtype, _flags, mseq, _port = _NLMSG.unpack_from(data, offset)
            if length < _NLMSG.size or offset + length > len(data):
                return
            payload = data[offset + _NLMSG.size:offset + length]
            offset += (length + 3) & ~3
            if mseq != seq:
                continue
            if mtype == NLMSG_DONE:
                return
            if mtype == NLMSG_ERROR:
                error = struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                if error:
                    raise OSError(-error, "netlink refused the request")
                return
            yield mtype, payload
            if not flags & NLM_F_DUMP:
                return


def _route_oif(nl: socket.socket, dst: bytes) -> int | None:
    body = _RTMSG.pack(socket.AF_INET, 32, 0, 0, 0, 0, 0, 0, 0)
    body += _RTA.pack(_RTA.size + 4, RTA_DST) + dst
    for mtype, payload in _exchange(nl, RTM_GETROUTE, 0, body, 1):
        if mtype == RTM_NEWROUTE and len(payload) >= _RTMSG.size:
            oif = _attrs(payload, _RTMSG.size).get(RTA_OIF)
            if oif is not None and len(oif) >= 4:
                return struct.unpack_from("=I", oif)[0]
    return None


def _qdiscs(nl: socket.socket, ifindex: int) -> list[tuple[int, int, str]]:
    body = _TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, 0, 0)
    found = []
    for mtype, payload in _exchange(nl, RTM_GETQDISC, NLM_F_DUMP, body, 2):
        if mtype != RTM_NEWQDISC or len(payload) < _TCMSG.size:
            continue
        _family, index, handle, parent, _info = _TCMSG.unpack_from(payload)
        if index != ifindex:  # older kernels dump every interface's
            continue
        kind = _attrs(payload, _TCMSG.size).get(TCA_KIND, b"").rstrip(b"\0")
        found.append((handle, parent, kind.decode("ascii", "replace")))
    return found
