"""Mouth-to-ear latency on the box's sound-card path: alsa-lib with real period and buffer
settings, paced by a clock, the click timed at the microphone, on the wire and at the speaker.

The box opens its ALSA device (``media/alsa.py``, as on a Pi) on alsa-lib's jack plugin; jackd's
dummy driver paces it at 8000 Hz like a card's crystal. A JACK client of this benchmark is the
room: its output port is the box's microphone, its input port the box's loudspeaker, both handled
in the same process cycle, so the lag from a click sent to the click heard is exact in samples.
A packet socket on ``lo`` times the click on the wire both ways (box -> Asterisk, Asterisk ->
box), which splits the round trip into the box's capture side (microphone -> wire), Asterisk's
Echo() and the box's playback side (wire -> speaker). The harness's own lag (its output looped
straight into its input in the same jackd) is measured in the same run and subtracted.

What this does not include: a real card's converters and USB or I2S transfer (a few ms), the
room, the far end's own latency; the jack plugin's ring buffer stands in for the card's DMA
buffer (sized by the box's own period and period count).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from devtools import jack_card
from devtools.asterisk import Asterisk
from devtools.box.process import Intercom
from devtools.rtp_wire import Wire
from devtools.waiting import wait_for

from . import latency

RATE = 8000
CLICK_LEVEL = 0.5  # the clicks' peak on JACK's float scale
JACK_PERIOD = 80  # jackd's own cycle: 10 ms
# issue #20's targets for the medians, by row: capture side, playback side
TARGETS_MS = {1: 40, 3: 50}


def _onsets(sent_at: list[int], heard: np.ndarray) -> list[float]:
    """For each click sent at sample s, the lag in samples of its best match (nan: none)."""
    lags = (latency.click_lag(heard, s, 1.0) for s in sent_at)  # a fifth of full scale
    return [float("nan") if lag is None else lag for lag in lags]


def click_times(wire: Wire, port: int, outbound: bool, after: float) -> list[tuple[float, int]]:
    """For each click in the flow (to ``port`` when outbound, from it otherwise) after the
    time ``after``: the wire time of the packet its onset is in, and the onset's place in that
    packet's frame (samples). The frame, not the click, is what crosses the wire: the sender's
    side owns the packetisation (the frame's first sample waits for its last), the receiver's
    side starts when the frame arrives (ITU-T G.114's split)."""
    from firmware.media.g711 import decode_ulaw

    flow = [p for p in wire.packets if (p[2] if outbound else p[1]) == port and p[0] > after]
    pcm = [np.frombuffer(decode_ulaw(p[4]), dtype="<i2").astype(float) for p in flow]
    template = latency.chirp()
    found, last = [], -1.0
    for j, (t, *_rest) in enumerate(flow):
        if np.abs(pcm[j]).max() <= 4000 or t - last <= 0.3 or j == 0:
            continue
        last = t
        around = np.concatenate(pcm[j - 1:j + 2])  # the onset may sit in the packet before
        k = int(np.argmax(np.abs(np.correlate(around, template, mode="valid"))))
        first = j - 1 + k // len(pcm[j])
        found.append((flow[first][0], k % len(pcm[j])))
    return found


def xruns_in(status: dict[str, Any]) -> int | None:
    """The box's count of card under- and overruns in its status, wherever this build keeps
    it: ``xruns``, or the sum of ``capture_xruns``/``playback_xruns``-style counters, in
    ``audio`` (or a section inside it), else in ``rtp``; None if it keeps none."""
    audio = status.get("audio") or {}
    places = [audio, *(v for v in audio.values() if isinstance(v, dict)),
              status.get("rtp") or {}]
    for section in places:
        if isinstance(section.get("xruns"), int):
            return section["xruns"]
        parts = [v for k, v in section.items() if k.endswith("xruns_in") and isinstance(v, int)]
        if parts:
            return sum(parts)
    return None


def available() -> str | None:
    """Why this cannot run here, or None."""
    if not jack_card.available():
        return "alsa-lib's jack plugin (libasound2-plugins) is missing"
    try:
        import jack  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"the JACK-Client module cannot load: {exc}"
    if os.geteuid() != 0:
        return "the packet socket on lo needs root"
    return None


def run(seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="intercom-bench-card-"))
    # jackd's dummy driver is the card's clock, above the box's loop as a card's interrupt is;
    # at normal priority it fell 3-7 % behind the clock on a busy machine
    jackd, env = jack_card.start(tmp, "iccard", "room:speaker", "room:mic", JACK_PERIOD,
                                 realtime=jack_card.CARD_PRIORITY)
    pbx = box = wire = None
    track = latency.click_track(int(RATE * (seconds + 40)), CLICK_LEVEL)
    room = jack_card.Room(env["JACK_DEFAULT_SERVER"], track)
    try:
        room.start()
        # the harness's own lag: its microphone port looped into its speaker port
        room.loop_through(True)
        room.play()
        time.sleep(3.0)
        n = room.pause()
        room.loop_through(False)
        sent = list(latency.click_starts(n))
        own = [x for x in _onsets(sent, room.heard[:n]) if x == x]
        harness = float(np.median(own)) if own else 0.0

        pbx = Asterisk().start()
        box = Intercom(tmp / "box", pbx.port, audio={"capture": "iccard", "playback": "iccard"},
                       log_level="info", env=env).start()
        wait_for(lambda: box.status().get("state") == "idle", 15, 0.1, "registration")
        wire = Wire()
        assert box.cmd("call", "600")["ok"]
        wait_for(lambda: box.status().get("state") == "in_call", 15, 0.1, "the echo call")
        remote = (box.status().get("media") or {}).get("remote_port")
        time.sleep(1.0)
        room.play()
        depths: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rtp = box.status().get("rtp") or {}
            if "buffer_depth_ms" in rtp:
                depths.append(rtp["buffer_depth_ms"])
            time.sleep(0.25)
        n, c = room.pause(), room.cycle
        status = box.status()
        rtp = status.get("rtp") or {}
        xruns = xruns_in(status)
        box.cmd("hangup")
        time.sleep(0.3)
        wire.close()
        sent = list(latency.click_starts(n))
        lags = _onsets(sent, room.heard[:n])
        # a sample's time: its cycle's start plus its place in the cycle
        starts, times = room.cycles[:c, 0], room.cycles[:c, 1]

        def when(sample: float) -> float:
            i = int(np.searchsorted(starts, sample, side="right")) - 1
            return float(times[max(i, 0)] + (sample - starts[max(i, 0)]) / RATE)

        out_wire = click_times(wire, remote, True, 0.0) if remote else []
        in_wire = click_times(wire, remote, False, 0.0) if remote else []
        rows = []
        for s, lag in zip(sent, lags, strict=False):
            if lag != lag:
                continue
            t_mic = when(s)
            t_spk = when(s + lag)
            # the click's frame: from its first sample at the microphone to its first sample
            # at the speaker (the click itself sits ``at`` samples into it)
            o, at = next(((t, k) for t, k in out_wire if t_mic - 0.03 < t < t_spk), (None, 0))
            i, at_in = next(((t, k) for t, k in in_wire if o is not None and o <= t < t_spk),
                            (None, 0))
            if o is None or i is None:
                continue
            rows.append(((lag - harness) / RATE * 1000, (o - t_mic) * 1000 + at / RATE * 1000,
                         (i - o) * 1000,
                         (t_spk - i) * 1000 - at_in / RATE * 1000 - harness / RATE * 1000))
        span = times[c - 1] - times[0] if c > 1 else 0.0
        card_ppm = ((starts[c - 1] - starts[0]) / span / RATE - 1) * 1e6 if span else 0.0
        return {"rows": rows, "harness_ms": harness / RATE * 1000, "clicks": len(sent),
                "jb_depth": float(np.mean(depths[4:] or depths or [float("nan")])),
                "card_ppm": card_ppm, "rtp": rtp, "xruns": xruns}
    finally:
        if wire is not None:
            wire.close()
        if box is not None:
            box.stop()
        if pbx is not None:
            pbx.cleanup()
        room.close()
        jack_card.stop(jackd)


def table(r: dict[str, Any]) -> str:
    rows = np.array(r["rows"]) if r["rows"] else np.zeros((0, 4))
    if not len(rows):
        return "no click made it through the card path"
    med = np.median(rows, axis=0)
    late = np.median(rows[len(rows) // 2:], axis=0)  # once the start's delays have been shed
    lo, hi = rows.min(axis=0), rows.max(axis=0)
    names = ["round trip, microphone to speaker (harness lag removed)",
             "box, capture side: microphone -> RTP on the wire (the click's frame)",
             "Asterisk Echo() on loopback: wire -> wire",
             "box, playback side: RTP on the wire -> speaker (the click's frame)"]
    out = [f"| part ({len(rows)} clicks of {r['clicks']}; ALSA through alsa-lib's jack plugin, "
           "8 kHz) | median ms | second half | min | max | target ms | median vs target |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for k, name in enumerate(names):
        target = TARGETS_MS.get(k)
        ratio = f"{target} | {med[k] / target:.2f}x" if target else " | "
        out.append(f"| {name} | {med[k]:.0f} | {late[k]:.0f} | {lo[k]:.0f} | {hi[k]:.0f} "
                   f"| {ratio} |")
    out.append(f"| of the playback side, the jitter buffer (mean depth) | {r['jb_depth']:.0f} "
               "| | | | | |")
    cap, play = med[1], med[3]
    out.append(f"\nMedians against issue #20's targets: capture side {cap:.0f} ms (target "
               f"<= {TARGETS_MS[1]}: {'met' if cap <= TARGETS_MS[1] else 'NOT met'}), playback "
               f"side {play:.0f} ms (target <= {TARGETS_MS[3]}: "
               f"{'met' if play <= TARGETS_MS[3] else 'NOT met'}).")
    rtp = r["rtp"]
    out.append("\nA side's time is its frame's: from the first sample of the 20 ms frame that "
               "carries the click, at the microphone, to that packet on the wire (so the "
               "packetisation is the sender's), and from the packet's arrival to that first "
               "sample at the speaker (ITU-T G.114's split; the click's place in its frame moves "
               "with the drift control and would otherwise move up to 20 ms between the sides).")
    fifos = "".join(f", {label} {rtp[key]:.0f} ms" for key, label in (
        ("playback_fifo_max_ms", "its playback FIFO reached"),
        ("capture_fifo_max_ms", "its capture FIFO")) if rtp.get(key))
    xruns = f"; card xruns {r['xruns']}" if r.get("xruns") is not None else ""
    out.append(f"\nThe harness's own lag (its output looped into its input in the same jackd, "
               f"subtracted above): {r['harness_ms']:.0f} ms. The paced device ran "
               f"{r['card_ppm']:+.0f} ppm against CLOCK_MONOTONIC (jackd's dummy driver falls "
               "behind on a loaded machine; a card's crystal is within a few hundred ppm); the "
               f"box measured {rtp.get('drift_ppm', 0):+.0f} ppm{fifos}{xruns}.")
    return "\n".join(out)
