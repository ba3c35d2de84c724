"""The card loop's clocks on a virtual clock: the loop ticks at a sound card's rate, the network
delivers at the monotonic clock's, and ``ClockSlip`` turns the difference into one-frame slips
that the jitter buffer makes at pauses, so the buffer neither starves nor grows; and a card
name that does not exist is one clear error.

The network here sends a packet every 20 ms of virtual time (a second of tone, then a 200 ms
pause, over and over); the loop pops one frame per card period, ``ppm`` off, its wake-ups
jittered by up to +-2 ms as a real card's periods are.
"""

from __future__ import annotations

import random

import pytest

from tests import compiled

pytest.importorskip("firmware.core._drift", reason=compiled.REASON)
from firmware.core._card import Card, CardError
from firmware.core._drift import ClockSlip
from firmware.core._g711 import encode_ulaw
from firmware.core._jitter import JitterBuffer

pytestmark = pytest.mark.compiled

FS = 160
PERIOD_NS = 20_000_000
TONE = encode_ulaw(b"".join(int(6000 * ((-1) ** (i // 4))).to_bytes(2, "little", signed=True)
                            for i in range(FS)))
PAUSE = encode_ulaw(bytes(2 * FS))


def frame_of(k: int) -> bytes:
    """Packet ``k``'s payload: 50 frames of tone, then 10 of pause."""
    return PAUSE if k % 60 >= 50 else TONE


def run(ppm: float, seconds: float, slip: bool, seed: int = 1) -> dict[str, object]:
    """The network and the card-clocked loop for ``seconds``: the jitter buffer's depth range
    after the first ten seconds, its misses, and what ClockSlip did."""
    rng = random.Random(seed)
    jb = JitterBuffer(FS, 2, 1, 10)
    jb.shed_at_pauses(0)
    clock = ClockSlip(FS)
    card_period = PERIOD_NS / (1 + ppm * 1e-6)  # a fast card's periods are shorter
    sent = ticks = misses = 0
    depths: list[int] = []
    events: list[int] = []
    end = int(seconds * 1e9)
    while True:
        t_tick = int(ticks * card_period) + 1_000_000 + rng.randint(-2_000_000, 2_000_000)
        t_send = sent * PERIOD_NS
        if min(t_tick, t_send) >= end:
            break
        if t_send <= t_tick:
            jb.put(sent * FS, sent & 0xFFFF, 1234, frame_of(sent))
            sent += 1
            continue
        k = clock.tick(t_tick)
        if slip and k:
            jb.slip(k)
            events.append(k)
        if jb.pop() is None and ticks > 5:
            misses += 1
        if t_tick > 10e9:
            depths.append(jb.depth)
        ticks += 1
    return {"depths": (min(depths), max(depths)), "misses": misses, "events": events,
            "held": jb.slips_held, "dropped": jb.slips_dropped, "ppm": clock.ppm,
            "grows": jb.grows, "shrinks": jb.shrinks, "late": jb.late}


@pytest.mark.parametrize("ppm", [300.0, -300.0])
def test_slips_at_pauses_keep_the_jitter_buffer_level(ppm: float) -> None:
    """Ten minutes at 300 ppm is 180 ms: nine frames slipped, each at a pause, all one way;
    nothing goes missing or late, the buffer's delay never grows (its depth after each pop
    stays 0-2 frames, the wake-ups' jitter moving it), the card's rate is measured."""
    r = run(ppm, 600.0, slip=True)
    events = r["events"]
    assert isinstance(events, list)
    assert 8 <= len(events) <= 10, r
    assert set(events) == {1 if ppm > 0 else -1}, "no flapping with +-2 ms wake-ups"
    assert (r["held"], r["dropped"]) == ((len(events), 0) if ppm > 0 else (0, len(events))), r
    assert r["depths"][1] <= 2, r  # type: ignore[index]
    assert r["misses"] == 0 and r["late"] == 0 and r["grows"] == 0, r
    assert abs(float(r["ppm"]) - ppm) < 20, r  # type: ignore[arg-type]


def test_without_slips_a_fast_card_starves_the_buffer() -> None:
    """The same fast card with the slips not made (the feature broken): the buffer runs dry,
    frames go missing (concealed) and its delay grows a frame each time."""
    r = run(300.0, 600.0, slip=False)
    assert r["misses"] > 0 and r["grows"] >= 5, r


def pause_runs(played: list[bytes | None]) -> list[int]:
    """The lengths of the runs of pause frames played."""
    runs, n = [], 0
    for f in played:
        if f == PAUSE:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


@pytest.mark.parametrize("frames", [1, -1])
def test_a_slip_waits_for_a_pause(frames: int) -> None:
    """A slip asked for during the tone is made at the next pause: held, a pause frame is
    played twice (11 instead of 10); dropped, one is skipped (9); the tone is untouched."""
    jb = JitterBuffer(FS, 1, 1, 10)
    jb.shed_at_pauses(0)
    played = []
    for k in range(75):
        jb.put(k * FS, k, 7, frame_of(k))
        if k == 10:
            jb.slip(frames)
        played.append(jb.pop())
    assert (jb.slips_held, jb.slips_dropped) == ((1, 0) if frames > 0 else (0, 1))
    assert pause_runs(played) == [10 + frames], pause_runs(played)
    first = played.index(PAUSE)
    assert played[first - 50:first] == [TONE] * 50 and TONE in played[first:]


def test_a_card_that_does_not_exist_is_one_line_naming_it() -> None:
    with pytest.raises(CardError) as err:
        Card("no_such_pcm_for_the_test", "no_such_pcm_for_the_test")
    text = str(err.value)
    assert text.startswith("ALSA capture device 'no_such_pcm_for_the_test' cannot be opened: ")
    assert "\n" not in text and err.value.errno > 0, text
