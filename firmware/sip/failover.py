"""Registration failover over the ordered targets: which failures move the registration, the
move itself, and the probes that bring it back to the preferred server.

Owns one account's ``TargetSet`` (``targets.py``) in motion: a timeout, a transport error, a
5xx (503 with Retry-After holds that server down that long) or lost keep-alives move the
registration to the next target at once; while registered with any but the first, an OPTIONS
probe goes to the more preferred one every failback interval, and an answer below 500 moves
the registration back (over TCP/TLS the stream adapter sends the probe over a short-lived
connection of its own, ``probing``, so the working connection stays; the move back waits for
the end of a call, whose server reaches the box only over that connection). A call is never
touched: its requests go where its INVITE came from or went to. Emits ``RegistrarMoved``. A
part of the user agent like a registration (``next_deadline`` / ``handle_timer(now)``); knows
nothing about DNS, sockets or clocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..events import RegistrarMoved
from .message import Response
from .registration import Registration
from .stack import Stack
from .targets import Target, TargetSet
from .transaction import ClientTransaction


def moves_on(status: int | None) -> bool:
    """Failures another server may not have: no answer or a transport error (None), 408, 5xx.
    A 401/403/404 says the account is wrong, and would be wrong on the next server too."""
    return status is None or status == 408 or 500 <= status <= 599


class Failover:
    """Moves ``reg`` between the targets of ``targets``."""

    def __init__(self, stack: Stack, reg: Registration, targets: TargetSet,
                 busy: Callable[[], bool] = lambda: False) -> None:
        self._stack = stack
        self.busy = busy  # a call is up (over TCP/TLS the return waits for its end)
        self.reg = reg
        self.targets = targets
        self._probe: tuple[ClientTransaction, Target] | None = None
        reg.server_addr = targets.current.addr
        reg.on_failure = self._failed

    # ------------------------------------------------------------------ part
    def next_deadline(self) -> float | None:
        if self._probe is not None or not self.reg.registered:
            return None
        return self.targets.probe_at if not self.targets.preferred else None

    def handle_timer(self, now: float) -> None:
        if self._probe is not None or not self.reg.registered:
            return
        target = self.targets.probe_target(now)
        if target is None:
            return
        if self._held_by_call():
            self.targets.probe_failed(now)
            return
        self._send_probe(target, now)

    def _held_by_call(self) -> bool:
        """Over a stream the call's server reaches the box only over the connection it has:
        no move (nor a probe that would lead to one) while a call is up."""
        return self._stack.transport.reliable and self.busy()

    def probing(self, addr: tuple[str, int]) -> bool:
        """An OPTIONS probe to ``addr`` is under way (a stream adapter sends it beside the
        working connection, never moving that connection for it)."""
        return self._probe is not None and self._probe[1].addr == addr

    def replace(self, targets: Sequence[Target], now: float) -> None:
        """DNS answered again (the addresses may have moved)."""
        if self.targets.replace(targets, now):
            self._moved(now)
            self.reg.move_to(self.targets.current.addr, now)

    # ------------------------------------------------------------------ failures
    def _failed(self, reason: str, status: int | None, retry_after: float | None,
                now: float) -> tuple[str, int] | None:
        if not moves_on(status):
            return None
        target = self.targets.failed(reason, now, retry_after)
        if target is None:
            return None
        self._moved(now)
        return target.addr

    def _moved(self, now: float) -> None:
        t = self.targets.current
        self._stack.counters["registrar_moves"] += 1
        self._stack.emit(RegistrarMoved(str(t), t.name, self.targets.reason or "",
                                        self.targets.preferred))

    # ------------------------------------------------------------------ return
    def _send_probe(self, target: Target, now: float) -> None:
        stack, cfg = self._stack, self.reg.config
        host = f"[{target.host}]" if ":" in target.host else target.host
        uri = f"sip:{host}:{target.port}"
        aor = f"<sip:{cfg.username}@{cfg.aor_domain}>"
        req = stack.new_request("OPTIONS", uri, f"{aor};tag={stack.token(6)}", f"<{uri}>",
                                stack.token(12), 1, user=cfg.username)
        self._stack.counters["registrar_probes"] += 1
        tx = stack.start_client(req, target.addr, now, self._on_probe_answer,
                                self._on_probe_timeout)
        self._probe = (tx, target)

    def _on_probe_answer(self, resp: Response, tx: ClientTransaction, now: float) -> None:
        if resp.status < 200 or self._probe is None or self._probe[0] is not tx:
            return
        target = self._probe[1]
        self._probe = None
        if resp.status >= 500 or self._held_by_call():  # 503: alive but unwilling, not back
            self.targets.probe_failed(now)
            return
        if self.targets.answered(target, now) is not None:
            self._moved(now)
            self.reg.move_to(target.addr, now)

    def _on_probe_timeout(self, tx: ClientTransaction, now: float) -> None:
        if self._probe is not None and self._probe[0] is tx:
            self._probe = None
            self.targets.probe_failed(now)
