"""Who may talk SIP to the box: the registrar's addresses and the installer's trusted sources.

Owns the source check the user agent makes before it reads a request or a response (only the
PBX may ring the box, change a call or open the door), the two policies for everyone else
(``drop``: nothing is sent back; ``403``: a short stateless refusal, never larger than what
the stranger sent), and the bounded "log once per source per minute" bookkeeping. Knows
nothing about sockets, name resolution (the application resolves the registrar's name and
hands the addresses in) or transactions.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable

from .errors import LocalProtocolError

Addr = tuple[str, int]
POLICIES = ("drop", "403")
LOG_INTERVAL = 60.0  # seconds between two log reports about the same source
_MAX_TRACKED = 1024  # sources remembered for rate-limited logging (oldest forgotten first)
MAX_REPORTS = 20  # log reports per minute over all sources (a spoofed flood has many sources)

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_sources(items: Iterable[str]) -> tuple[_Network, ...]:
    """Addresses or CIDR blocks (``192.168.1.10``, ``10.0.0.0/24``, ``::1``).

    Raises ValueError naming the first entry that is neither."""
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR block") from None
    return tuple(nets)


def _address(host: str) -> _Address | None:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class SourceTrust:
    """The set of sources allowed to send SIP to the box, and what happens to the others."""

    def __init__(self, registrar: Iterable[str] = (), trusted_sources: Iterable[str] = (),
                 policy: str = "drop") -> None:
        if policy not in POLICIES:
            raise LocalProtocolError(f"unknown untrusted-source policy {policy!r}")
        self.policy = policy
        self._networks = parse_sources(trusted_sources)
        self._registrar: frozenset[_Address] = frozenset()
        self.set_registrar(registrar)
        self._last_report: OrderedDict[str, float] = OrderedDict()
        self._suppressed: dict[str, int] = {}
        self._window = (float("-inf"), 0)  # (start of the current minute, reports in it)

    @property
    def registrar(self) -> frozenset[str]:
        return frozenset(str(a) for a in self._registrar)

    def set_registrar(self, addresses: Iterable[str]) -> None:
        """Every address the registrar's name resolves to (refreshed at each registration)."""
        found = {a for a in (_address(h) for h in addresses) if a is not None}
        self._registrar = frozenset(found)

    def add_registrar(self, address: str) -> None:
        if (a := _address(address)) is not None:
            self._registrar = self._registrar | {a}

    def trusted(self, addr: Addr) -> bool:
        a = _address(addr[0])
        if a is None:
            return False
        return a in self._registrar or any(a in net for net in self._networks)

    def is_registrar(self, addr: Addr) -> bool:
        """One of the registrar's addresses (its reserved share of the transaction budget)."""
        a = _address(addr[0])
        return a is not None and a in self._registrar

    @staticmethod
    def source_key(addr: Addr) -> str:
        """One name per source host (IPv4-mapped IPv6 folded), for per-source accounting."""
        a = _address(addr[0])
        return str(a) if a is not None else addr[0]

    def report(self, addr: Addr, now: float) -> int | None:
        """Count a refused message from ``addr``; return how many were refused from it since
        the last report when it is time to log again (at most once a minute per source)."""
        host = addr[0]
        last = self._last_report.get(host)
        if last is not None and now - last < LOG_INTERVAL:
            self._suppressed[host] = self._suppressed.get(host, 0) + 1
            return None
        start, reports = self._window
        if now - start >= LOG_INTERVAL:
            start, reports = now, 0
        if reports >= MAX_REPORTS:
            return None  # still counted by the user agent, just not logged
        self._window = (start, reports + 1)
        self._last_report[host] = now
        self._last_report.move_to_end(host)
        while len(self._last_report) > _MAX_TRACKED:
            old, _ = self._last_report.popitem(last=False)
            self._suppressed.pop(old, None)
        return self._suppressed.pop(host, 0) + 1
