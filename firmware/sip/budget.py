"""The byte budget of what the user agent stores for open server transactions, shared by source.

Owns the accounting rule (a stored transaction costs its request and response bytes, a per
header-field charge for their parsed form and a fixed charge for the transaction itself), the
total budget, the share each non-registrar source may hold, the reserve only the registrar's
addresses may use, and the oldest-first order of transactions that may be evicted (answered
ones, kept only to absorb retransmissions). Knows nothing about parsing, transactions' states,
sockets or who the registrar is (the caller says, per request).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

# Measured with tracemalloc (tests/unit/test_budget.py keeps them honest): a parsed header
# field costs about 100 bytes beyond its text (a tuple and two str objects), a server
# transaction with its timer entries, table slot and stubs about 2 KiB beyond its messages.
HEADER_COST = 100
TX_COST = 2048


def message_cost(size: int, header_fields: int) -> int:
    """What one parsed message of ``size`` bytes with ``header_fields`` fields costs."""
    return size + HEADER_COST * header_fields


@dataclass(frozen=True)
class BudgetLimits:
    # ~900 answered OPTIONS (~2.3 KB each) in all: a PBX's normal load is a few per minute
    total: int = 2 << 20  # all stored transactions together
    registrar_reserve: int = 1 << 20  # of the total, usable only by the registrar's addresses
    source_share: int = 1 << 19  # what one other (trusted) source may hold at once


class TransactionBudget:
    """Admission and release of stored transactions by cost (bytes) and source.

    A source that is not the registrar gets at most ``source_share`` and, with all the others,
    at most ``total - registrar_reserve``: no trusted SBC or second PBX can crowd the registrar
    out. The registrar may use the whole total; when even that is full, answered transactions
    are evicted oldest first to make room for it (``admit`` returns them)."""

    def __init__(self, limits: BudgetLimits | None = None) -> None:
        self.limits = limits or BudgetLimits()
        self.used = 0
        self.peak = 0
        self._others = 0  # held by sources that are not the registrar
        self._by_source: dict[str, int] = {}
        self._held: dict[object, tuple[str, bool, int]] = {}  # item -> (source, registrar, cost)
        self._evictable: OrderedDict[object, None] = OrderedDict()
        self._evictable_bytes = 0

    def held(self, source: str) -> int:
        return self._by_source.get(source, 0)

    def __contains__(self, item: object) -> bool:
        return item in self._held

    def __len__(self) -> int:
        return len(self._held)

    def admit(self, item: object, source: str, registrar: bool, cost: int) -> list[object] | None:
        """Store ``item`` at ``cost`` if the rules allow; None when refused. A list (usually
        empty) of items evicted to make room — the caller must drop them."""
        lim = self.limits
        evicted: list[object] = []
        if registrar:
            if self.used - self._evictable_bytes + cost > lim.total:
                return None  # even evicting every answered transaction would not make room
            while self.used + cost > lim.total:
                victim = next(iter(self._evictable))
                self.release(victim)
                evicted.append(victim)
        else:
            if self.held(source) + cost > lim.source_share or \
                    self._others + cost > lim.total - lim.registrar_reserve or \
                    self.used + cost > lim.total:
                return None
        self._held[item] = (source, registrar, cost)
        self._by_source[source] = self.held(source) + cost
        if not registrar:
            self._others += cost
        self._charge(cost)
        return evicted

    def settle(self, item: object, cost: int, evictable: bool = False) -> None:
        """The item's real cost once answered (it may have shrunk, or grown by its response);
        ``evictable``: it now only absorbs retransmissions and may make room for the registrar."""
        entry = self._held.get(item)
        if entry is None:
            return
        source, registrar, old = entry
        self._held[item] = (source, registrar, cost)
        self._by_source[source] += cost - old
        if not registrar:
            self._others += cost - old
        self._charge(cost - old)
        if item in self._evictable:
            self._evictable_bytes += cost - old
        elif evictable:
            self._evictable[item] = None
            self._evictable_bytes += cost

    def release(self, item: object) -> None:
        """Forget ``item`` (terminated or evicted); unknown items are ignored."""
        entry = self._held.pop(item, None)
        if entry is None:
            return
        source, registrar, cost = entry
        if item in self._evictable:
            del self._evictable[item]
            self._evictable_bytes -= cost
        left = self._by_source[source] - cost
        if left:
            self._by_source[source] = left
        else:
            del self._by_source[source]
        if not registrar:
            self._others -= cost
        self.used -= cost

    def _charge(self, delta: int) -> None:
        self.used += delta
        if self.used > self.peak:
            self.peak = self.used
