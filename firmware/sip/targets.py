"""More than one server: RFC 3263's ordering of what DNS answered, and the failover and return
policy over the ordered targets.

Owns the records' meaning — NAPTR choice (RFC 3403/3263 §4.1: lowest order, then preference,
the transport's service, flag "s"), SRV ordering (RFC 2782: priority, then weight chosen with an
injected random) — the ``Target`` list built from them (with the name each target must prove
over TLS, ``Target.identity``), and ``TargetSet``: which target the registration uses, which
ones are held down after a failure (``Retry-After`` or the failback interval) and when the
preferred one is due to be probed again. Decisions take ``now``; the random source is passed
in. Knows nothing about DNS queries (``firmware.resolver`` asks them and hands the records in),
sockets, clocks or the registration's messages (``failover.py`` drives those).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .transaction import Addr
from .transport import TRANSPORTS

MAX_TARGETS = 16  # what the host firewall's registrar file holds; more answers are ignored
# RFC 3263 §4.1: the NAPTR services of each transport, and the SRV prefix without NAPTR


@dataclass(frozen=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class Target:
    """One address to send to, and how it was found (shown by status)."""

    host: str  # an IP address
    port: int
    name: str  # the configured entry or the SRV target it came from
    via: str  # "address" (configured), "A" (name with a port), "SRV", "NAPTR", "A default"
    domain: str = ""  # SRV/NAPTR: the configured name whose records named this target

    @property
    def addr(self) -> Addr:
        return (self.host, self.port)

    @property
    def identity(self) -> str:
        """The name this server must prove over TLS: the configured host (a configured address:
        itself), or the SRV target DNS named when that lies inside the configured domain.
        A target outside it must prove the configured domain (RFC 5922): DNS is not
        authenticated, and a spoofed SRV answer naming a host of the attacker's own, with a
        certificate for it from a public CA, must not pass."""
        if self.via == "address":
            return self.host
        if self.domain and not within(self.name, self.domain):
            return self.domain
        return self.name

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def within(name: str, domain: str) -> bool:
    """``name`` is ``domain`` or a name under it (DNS names: case-insensitive)."""
    name, domain = name.rstrip(".").lower(), domain.rstrip(".").lower()
    return name == domain or name.endswith("." + domain)


def srv_name(domain: str, transport: str) -> str:
    """Where SRV records of ``domain`` are looked up for ``transport`` without NAPTR."""
    return f"{TRANSPORTS[transport].srv}.{domain}"


def pick_naptr(records: Sequence[Naptr], transport: str) -> str | None:
    """The SRV name the NAPTR records point ``transport`` at (None: no usable record)."""
    service = TRANSPORTS[transport].naptr
    usable = [r for r in records if r.flags.lower() == "s" and r.service.upper() == service
              and r.replacement not in ("", ".")]
    if not usable:
        return None
    best = min(usable, key=lambda r: (r.order, r.preference))
    return best.replacement.rstrip(".").lower()


def order_srv(records: Sequence[Srv], rand: Callable[[int], int]) -> list[Srv]:
    """RFC 2782's order: by priority; inside one priority, each next record chosen with a
    chance proportional to its weight (``rand(n)``: an integer in 0..n, both ends included).
    A single record naming "." says the service is not offered: no targets. Records with
    port 0 are dropped."""
    if len(records) == 1 and records[0].target in ("", "."):
        return []
    left = [r for r in records if r.port and r.target not in ("", ".")]
    ordered: list[Srv] = []
    for priority in sorted({r.priority for r in left}):
        group = sorted((r for r in left if r.priority == priority), key=lambda r: r.weight)
        while group:  # zero weights first in the running sum (RFC 2782)
            total = sum(r.weight for r in group)
            pick = min(max(rand(total), 0), total) if total else 0  # a bad random: clamped
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    ordered.append(group.pop(i))
                    break
    return ordered


def capped(targets: Sequence[Target]) -> list[Target]:
    """Duplicates removed (first kept), at most ``MAX_TARGETS``."""
    seen: set[Addr] = set()
    out: list[Target] = []
    for t in targets:
        if t.addr not in seen:
            seen.add(t.addr)
            out.append(t)
    return out[:MAX_TARGETS]


class TargetSet:
    """The ordered targets (the first preferred) and which one the registration uses.

    A failed target is held down for ``Retry-After`` when the server sent one, else for
    ``failback``; a failure moves to the most preferred target not held down. While the box
    is registered with any but the first, the more preferred ones are probed every
    ``failback`` seconds, and a probe they answer brings the registration back."""

    def __init__(self, targets: Sequence[Target], failback: float = 60.0) -> None:
        if not targets:
            raise ValueError("no target")
        self.targets = capped(targets)
        self.failback = failback
        self.index = 0
        self.down_until: dict[Addr, float] = {}
        self.reason: str | None = None  # why the registration last moved (None: never)
        self.moves = 0
        self.probe_at: float | None = None

    @property
    def current(self) -> Target:
        return self.targets[self.index]

    @property
    def preferred(self) -> bool:
        return self.index == 0

    def addresses(self) -> list[str]:
        return sorted({t.host for t in self.targets})

    def failed(self, reason: str, now: float, retry_after: float | None = None) -> Target | None:
        """The current target failed: hold it down; the target to use now if it is another
        one (None: every other target is held down — stay and back off)."""
        hold = retry_after if retry_after is not None and retry_after > 0 else self.failback
        self.down_until[self.current.addr] = now + hold
        for i, t in enumerate(self.targets):
            if i != self.index and self.down_until.get(t.addr, float("-inf")) <= now:
                return self._move(i, f"{self.current} failed: {reason}", now)
        return None

    def _move(self, index: int, reason: str, now: float) -> Target:
        self.index = index
        self.reason = reason
        self.moves += 1
        self.probe_at = None if index == 0 else now + self.failback
        return self.current

    def probe_target(self, now: float) -> Target | None:
        """A more preferred target to probe now (the most preferred not held down), if due."""
        if self.index == 0 or self.probe_at is None or now < self.probe_at:
            return None
        better = self.targets[:self.index]
        for t in better:
            if self.down_until.get(t.addr, float("-inf")) <= now:
                return t
        # every better one is held down: look again when the first hold-down ends
        self.probe_at = min(self.down_until[t.addr] for t in better)
        return None

    def probe_failed(self, now: float) -> None:
        self.probe_at = now + self.failback

    def answered(self, target: Target, now: float) -> Target | None:
        """``target`` answered a probe: return to it (None: it is no longer a better one)."""
        if target not in self.targets[:self.index]:
            return None
        self.down_until.pop(target.addr, None)
        return self._move(self.targets.index(target),
                          f"{target} answers again (preferred over {self.current})", now)

    def replace(self, targets: Sequence[Target], now: float) -> bool:
        """DNS answered again: the new list, keeping the target in use when it is still in it
        (True: the one in use is gone, the registration must move to ``current``)."""
        if not targets:
            return False
        new = capped(targets)
        if {t.addr for t in new} == {t.addr for t in self.targets}:
            return False  # the same servers: keep the order (a new weighted draw would flap)
        current = self.current
        self.targets = new
        self.down_until = {a: t for a, t in self.down_until.items()
                           if a in {n.addr for n in new}}
        found = [i for i, t in enumerate(new) if t.addr == current.addr]
        if found:
            self.index = found[0]
            if self.index and self.probe_at is None:
                self.probe_at = now + self.failback
            return False
        self._move(0, f"{current} no longer in DNS", now)
        return True
