"""Finding the SIP servers: RFC 3263 over DNS (NAPTR -> SRV -> A; a name without NAPTR/SRV:
its A records with the transport's default port), a name with a port: its A records, an
address: itself. The box speaks IPv4 only (``firmware.address`` users, the RTP core): a name
with IPv6 (AAAA) addresses but no IPv4 one, or an IPv6 address, is skipped with a reason
(``Resolved.skipped``) and the next target is used; a name with both uses its A records.

Owns the queries — dnspython's asyncio resolver, imported only when a name must be resolved,
each query bounded (``QUERY_TIMEOUT``) and the whole resolution too (``TOTAL_TIMEOUT``), asked
of ``sip.dns_servers`` when set, else of the system's resolver — and the wording of what went
wrong (an ``OSError`` naming the entry). Runs on the asyncio loop, never in the media loop.
The meaning of the records (which NAPTR, the SRV order, the failover) is
``firmware.sip.targets``'; knows nothing about SIP messages or the registration.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .address import host_port, ip, ipv4
from .config import SipSettings
from .sip.targets import MAX_TARGETS, Naptr, Srv, Target, capped, order_srv, pick_naptr, srv_name
from .sip.transport import transport as sip_transport

QUERY_TIMEOUT = 2.0  # seconds one DNS query may take
TOTAL_TIMEOUT = 8.0  # seconds the whole resolution of one entry may take
_SYSTEM_RANDOM = random.SystemRandom()


@dataclass(frozen=True)
class Resolved:
    """Where REGISTER and new calls go, in order (the outbound proxy's targets when there is
    one), every address of the configured servers and the proxy (all trusted), and why a
    configured entry or a target DNS named is not among them (``skipped``, one line each)."""

    targets: list[Target]
    trusted: list[str]
    skipped: list[str] = field(default_factory=list)


def _rand(n: int) -> int:
    return _SYSTEM_RANDOM.randint(0, n)


def dns_server(text: str) -> tuple[str, int]:
    """``sip.dns_servers`` entry -> (address, port); port 53 unless given."""
    found = host_port(text)
    if found is None or ip(found[0]) is None:
        raise ValueError(f"{text!r} is not an IP address[:port]")
    return found[0], found[1] or 53


class Dns:
    """The queries of one resolution (``servers``: (address, port) pairs; empty: the system's
    resolv.conf)."""

    def __init__(self, servers: Sequence[tuple[str, int]] = ()) -> None:
        self.servers = list(servers)
        self._resolver: Any = None

    def _get(self) -> Any:
        if self._resolver is None:
            import dns.asyncresolver  # noqa: PLC0415 - only a box that resolves names needs it
            import dns.nameserver  # noqa: PLC0415

            try:
                r = dns.asyncresolver.Resolver(configure=not self.servers)
            except Exception as exc:  # noqa: BLE001 - no resolv.conf: one clear error
                raise OSError(f"no DNS resolver configured ({exc})") from None
            if self.servers:
                r.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in self.servers]
            r.timeout = r.lifetime = QUERY_TIMEOUT
            self._resolver = r
        return self._resolver

    async def records(self, name: str, kind: str) -> list[Any]:
        """The answer's records; [] for no such name, no such record or no answer in time."""
        import dns.exception  # noqa: PLC0415

        try:
            answer = await self._get().resolve(name, kind, search=False)
        except dns.exception.DNSException:
            return []
        return list(answer)[:64]

    async def naptr(self, name: str) -> list[Naptr]:
        return [Naptr(r.order, r.preference, _text(r.flags), _text(r.service),
                      r.replacement.to_text(omit_final_dot=True))
                for r in await self.records(name, "NAPTR")]

    async def srv(self, name: str) -> list[Srv]:
        return [Srv(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True))
                for r in await self.records(name, "SRV")]

    async def addresses(self, name: str, port: int) -> list[str]:
        """IPv4 addresses of ``name``: from ``sip.dns_servers`` when set, else the system's
        resolver (which also reads /etc/hosts)."""
        if self.servers:
            return sorted({r.address for r in await self.records(name, "A")})
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(
                name, port, family=socket.AF_INET, type=socket.SOCK_DGRAM), QUERY_TIMEOUT * 2)
        except (OSError, TimeoutError):
            return []
        return sorted({str(info[4][0]) for info in infos})

    async def has_ipv6(self, name: str) -> bool:
        """Whether ``name`` has IPv6 (AAAA) addresses: asked only of a name without IPv4 ones,
        to say why it is skipped."""
        if self.servers:
            return bool(await self.records(name, "AAAA"))
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(
                name, None, family=socket.AF_INET6, type=socket.SOCK_DGRAM), QUERY_TIMEOUT * 2)
        except (OSError, TimeoutError):
            return False
        return bool(infos)


IPV6_ONLY = "has only IPv6 (AAAA) addresses and the box speaks IPv4 only"


async def _no_ipv4(dns: Dns, name: str, what: str = "has no IPv4 address") -> str:
    """Why ``name`` gives no target: IPv6 only, or ``what``."""
    return f"{name!r} {IPV6_ONLY}" if await dns.has_ipv6(name) else f"{name!r} {what}"


def _text(value: bytes | str) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


async def resolve_entry(dns: Dns, entry: str, transport: str,
                        rand: Callable[[int], int] = _rand,
                        skipped: list[str] | None = None) -> list[Target]:
    """One configured entry -> its targets in order; OSError when it yields none. An SRV
    target without an IPv4 address is left out, and why is appended to ``skipped``."""
    parsed = host_port(entry)
    if parsed is None:
        raise OSError(f"{entry!r} is not host[:port]")
    host, port = parsed
    default = sip_transport(transport).default_port
    if ip(host) is not None:
        if ipv4(host) is None:
            raise OSError(f"{entry!r} is an IPv6 address and the box speaks IPv4 only")
        return [Target(host, port or default, entry, "address")]
    if port is not None:
        found = await dns.addresses(host, port)
        if not found:
            raise OSError(await _no_ipv4(dns, host))
        return [Target(a, port, host, "A") for a in found]
    via, name = "SRV", srv_name(host, transport)
    pointed = pick_naptr(await dns.naptr(host), transport)
    if pointed is not None:
        via, name = "NAPTR", pointed
    records = order_srv(await dns.srv(name), rand)
    if records:
        targets: list[Target] = []
        left_out: list[str] = []
        for rec in records[:MAX_TARGETS]:
            found = await dns.addresses(rec.target, rec.port)
            if not found:
                left_out.append(f"{await _no_ipv4(dns, rec.target)} ({via} target of "
                                f"{name})")
            targets += [Target(a, rec.port, rec.target, via, host) for a in found]
        if not targets:
            raise OSError(f"the SRV targets of {name!r} have no IPv4 address: "
                          + "; ".join(left_out))
        if skipped is not None:
            skipped += left_out
        return targets
    found = await dns.addresses(host, default)
    if not found:
        raise OSError(await _no_ipv4(dns, host, "has no SRV records and no IPv4 address"))
    return [Target(a, default, host, "A default") for a in found]


async def resolve_servers(sip: SipSettings, rand: Callable[[int], int] = _rand,
                          dns: Dns | None = None) -> Resolved:
    """Every entry of ``sip.server`` (in order) and ``sip.outbound_proxy``. Raises OSError when
    none of the entries that carry the traffic resolves (the proxy's, else the servers').
    ``dns``: the queries (default: ``sip.dns_servers``, else the system's resolver)."""
    dns = dns or Dns([dns_server(s) for s in sip.dns_servers])

    async def entries(items: Sequence[str]) -> tuple[list[Target], list[str]]:
        found: list[Target] = []
        problems: list[str] = []
        for entry in items:
            try:
                found += await asyncio.wait_for(
                    resolve_entry(dns, entry, sip.transport, rand, problems), TOTAL_TIMEOUT)
            except TimeoutError:
                problems.append(f"{entry}: no DNS answer within {TOTAL_TIMEOUT:g} s")
            except OSError as exc:
                problems.append(str(exc))
        return capped(found), problems

    host = f"[{sip.server}]" if ":" in sip.server else sip.server
    servers, problems = await entries(sip.servers or (f"{host}:{sip.port}",))
    if sip.outbound_proxy:
        proxy, proxy_problems = await entries((sip.outbound_proxy,))
        if not proxy:
            raise OSError("; ".join(proxy_problems))
        # the proxy's addresses first: they carry the traffic. The firewall's registrar file
        # holds MAX_TARGETS addresses (more and it ignores the whole file)
        hosts = list(dict.fromkeys(t.host for t in (*proxy, *servers)))
        if len(hosts) > MAX_TARGETS:
            problems.append(f"{len(hosts) - MAX_TARGETS} server address(es) beyond the first "
                            f"{MAX_TARGETS} (the outbound proxy's first) are not trusted")
        return Resolved(proxy, sorted(hosts[:MAX_TARGETS]), proxy_problems + problems)
    if not servers:
        raise OSError("; ".join(problems))
    return Resolved(servers, sorted({t.host for t in servers}), problems)
