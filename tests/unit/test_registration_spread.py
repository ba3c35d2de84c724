"""The registration's random spread (``sip/registration.py``): a building of boxes that lost
their registrar at the same moment comes back over seconds, not in one second (RFC 5626 §4.5
jittered backoff), and boxes started together refresh and send keep-alives at their own moments.
Each box is a real ``UserAgent`` on a virtual clock against the scripted registrar, with its own
seeded source."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from devtools.registrar import Registrar
from devtools.registrar import ua_with_registrar as make
from firmware.events import Registered, RegistrationFailed
from firmware.sip.message import Request
from firmware.sip.registration import RegState
from firmware.sip.ua import UserAgent

BOXES = 60


class ClockedRegistrar(Registrar):
    """The scripted registrar, remembering when each REGISTER reached it (while up)."""

    def __init__(self, ua: UserAgent) -> None:
        super().__init__(ua)
        self.arrivals: list[float] = []

    def answer(self, req: Request) -> str | None:
        if req.method == "REGISTER":
            self.arrivals.append(self.now)
        return super().answer(req)


def building(seeded: bool, **cfg: Any) -> list[tuple[UserAgent, ClockedRegistrar]]:
    """``BOXES`` boxes registered at the same instant (a power cut ends), each with a seeded
    spread source, or none (``seeded=False``: every delay exactly as configured)."""
    out = []
    for i in range(BOXES):
        ua, _ = make(**cfg)
        if seeded:
            ua.reg.rand = random.Random(i).random
        else:
            ua.reg.rand = lambda: 0.0
        reg = ClockedRegistrar(ua)
        ua.start(0.0)
        reg.pump()
        assert ua.reg.state is RegState.REGISTERED
        out.append((ua, reg))
    return out


def outage(boxes: list[tuple[UserAgent, ClockedRegistrar]], down: float,
           back: float, until: float) -> Counter[int]:
    """The registrar stops answering at ``down`` and answers again at ``back``: the REGISTERs
    it then receives, counted per second."""
    per_second: Counter[int] = Counter()
    for ua, reg in boxes:
        reg.advance(down - reg.now)
        reg.up = False
        reg.advance(back - reg.now)
        reg.up = True
        reg.arrivals.clear()
        reg.advance(until - reg.now)
        assert ua.reg.state is RegState.REGISTERED, "every box is back"
        per_second.update(int(t) for t in reg.arrivals)
    return per_second


def test_a_building_comes_back_spread_over_seconds_not_in_one() -> None:
    cfg = dict(keepalive="options", keepalive_interval=30.0, retry_min=2.0, retry_max=60.0)
    herd = outage(building(False, **cfg), down=100, back=400, until=700)
    spread = outage(building(True, **cfg), down=100, back=400, until=700)
    # without a spread every box retries on the same second: the registrar's peak is all of
    # them (each REGISTER and its answer to the challenge)
    assert max(herd.values()) >= BOXES, herd
    # with it, no second sees more than a third of the building's requests: the peak is the
    # REGISTERs that were in flight when the registrar came back (their retransmissions, T2 =
    # 4 s apart, get through within 4 s); the others return on their own spread retries
    assert max(spread.values()) <= BOXES // 3, spread
    assert len(spread) >= 15, f"the returns spread over {len(spread)} seconds only"


def test_retry_waits_between_half_and_all_of_its_backoff() -> None:
    ua, reg = make(password="wrong", retry_min=2.0, retry_max=16.0)
    ua.reg.rand = random.Random(7).random
    ua.start(reg.now)
    reg.advance(2000)
    retries = [e.retry_in for e in reg.events() if isinstance(e, RegistrationFailed)]
    assert len(retries) > 100
    caps = [min(2.0 * 2 ** n, 16.0) for n in range(len(retries))]
    assert all(cap / 2 <= r <= cap for r, cap in zip(retries, caps, strict=True)), retries[:8]
    assert len({round(r, 3) for r in retries[4:]}) > 50, "every capped retry draws anew"


def test_boxes_registered_together_refresh_at_their_own_moments() -> None:
    boxes = building(True)  # 300 s granted: refresh 270 s less up to a fifth
    firsts = sorted(ua.reg.next_deadline() or 0 for ua, _ in boxes)
    assert 216.0 <= firsts[0] and firsts[-1] <= 270.0, (firsts[0], firsts[-1])
    assert len({int(t) for t in firsts}) >= 25, "refreshes fall in many different seconds"
    for _ua, reg in boxes[:5]:
        reg.events()
        reg.advance(3000)
        assert all(isinstance(e, Registered) for e in reg.events()), "every refresh holds"


def test_keepalives_of_boxes_started_together_drift_apart() -> None:
    sent: list[list[float]] = []
    for i in range(20):
        ua, reg = make(keepalive="options", keepalive_interval=30.0, register_expires=3600)
        ua.reg.rand = random.Random(100 + i).random
        times: list[float] = []
        real = reg.answer

        def answer(req: Request, times: list[float] = times, reg: Registrar = reg,
                   real: Callable[[Request], str | None] = real) -> str | None:
            if req.method == "OPTIONS":
                times.append(reg.now)
            return real(req)

        reg.answer = answer  # type: ignore[method-assign]
        ua.start(0.0)
        reg.advance(600)
        sent.append(times)
    gaps = [b - a for times in sent for a, b in zip(times, times[1:], strict=False)]
    assert gaps and all(24.0 <= g <= 30.0 for g in gaps), (min(gaps), max(gaps))
    tenth = {int(times[9]) for times in sent}
    assert len(tenth) >= 10, f"the tenth keep-alive of 20 boxes fell in {sorted(tenth)}"
