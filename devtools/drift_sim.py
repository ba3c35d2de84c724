"""A sound card with its own clock against the 20 ms loop, simulated on a virtual clock.

For the drift-control test and benchmark: the card drains the real playback ``PcmFifo`` and
fills the real capture ``PcmFifo`` one 20 ms period (of its own, ``ppm``-off clock) at a time,
stamping each transfer with the virtual time; the loop side goes through
``firmware.core._drift.DriftCompensator`` as the media thread does. A 1013 Hz tone (not a multiple
of 50 Hz: a dropped or repeated sample would show) goes through both ways, and ``glitches``
judges what came out against a clean tone.
"""

from __future__ import annotations

import math

import numpy as np

from firmware._rtpcore import PcmFifo
from firmware.core._drift import DriftCompensator

RATE, FS, HZ, AMP = 8000, 160, 1013.0, 12000.0
CARD_PERIOD = 160  # frames per card period, in the card's own clock


def clean_step() -> float:
    """The largest sample-to-sample change of a clean tone at HZ."""
    return 2 * AMP * math.sin(math.pi * HZ / RATE)


class Card:
    """A sound card whose crystal runs ``ppm`` off: periods at 20 ms * (1 - ppm 1e-6)."""

    def __init__(self, ppm: float, phase: float = 0.37) -> None:
        self.period_s = CARD_PERIOD / (RATE * (1 + ppm * 1e-6))
        self.next_play = self.next_cap = 1.0 + phase * self.period_s
        self.cap_n = 0  # capture samples taken so far (the card's sample index)
        self.rate = RATE * (1 + ppm * 1e-6)

    def run_until(self, t: float, play: PcmFifo, cap: PcmFifo, played: list) -> int:
        """Move the card's periods up to ``t``; returns how many periods found too little."""
        short = 0
        while self.next_play <= t:
            got = play.read(CARD_PERIOD, now_ns=round(self.next_play * 1e9))
            short += len(got) < 2 * CARD_PERIOD
            played.append(got + bytes(2 * CARD_PERIOD - len(got)))  # starved: it plays silence
            self.next_play += self.period_s
        while self.next_cap <= t:
            n = np.arange(self.cap_n, self.cap_n + CARD_PERIOD)
            # the same acoustic 1013 Hz sampled by the card's clock
            cap.write((AMP * np.sin(2 * np.pi * HZ * n / self.rate)).astype("<i2").tobytes(),
                      now_ns=round(self.next_cap * 1e9))
            self.cap_n += CARD_PERIOD
            self.next_cap += self.period_s
        return short


def simulate(ppm: float, seconds: float, enabled: bool = True, backlog: int = 0) -> dict:
    """``seconds`` of call at 20 ms ticks with a card ``ppm`` off; what came out, and how.
    ``backlog``: samples of silence already queued for playback when the call starts."""
    comp = DriftCompensator(FS, enabled, enabled)
    play, cap = PcmFifo(8000), PcmFifo(8000)
    play.write(bytes(2 * backlog), now_ns=round(1e9))
    play_levels: list[int] = []
    card = Card(ppm)
    played: list[bytes] = []
    captured: list[bytes] = []
    play_max = cap_max = 0
    underruns = card_short = 0
    for k in range(int(seconds * 50)):
        t = k * 0.02 + 1.0
        now = round(t * 1e9)
        short = card.run_until(t, play, cap, played)
        card_short += short if k > 50 else 0
        # the loop: capture side first, then playback, as MediaStream._tick does
        need = comp.capture_need(len(cap), now - cap.last_push_ns)
        frame, got = comp.capture(cap.read(need))
        if k > 5:
            underruns += got < FS
            captured.append(frame)
        n = np.arange(k * FS, (k + 1) * FS)
        tone = (AMP * np.sin(2 * np.pi * HZ * n / RATE)).astype("<i2").tobytes()
        play.write(comp.playback(tone, len(play), now - play.last_pull_ns))
        play_max, cap_max = max(play_max, len(play)), max(cap_max, len(cap))
        play_levels.append(len(play))
    return {"comp": comp, "played": played, "captured": captured, "play_max": play_max,
            "cap_max": cap_max, "play_overruns": play.overruns, "cap_overruns": cap.overruns,
            "underruns": underruns, "card_short": card_short, "play_levels": play_levels}


def glitches(chunks: list[bytes], skip_s: float = 2.0) -> tuple[float, float]:
    """(largest sample step / a clean tone's, worst out-of-band energy in dB over 1 s windows)."""
    x = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float64)[int(skip_s * RATE):]
    x = x[:len(x) - len(x) % RATE]
    step = float(np.abs(np.diff(x)).max()) / clean_step()
    windows = x.reshape(-1, RATE) * np.hanning(RATE)
    spectra = np.abs(np.fft.rfft(windows, axis=1)) ** 2
    peak = spectra.argmax(axis=1)
    bins = np.arange(spectra.shape[1])
    band = np.abs(bins[None, :] - peak[:, None]) <= 20  # 1 Hz bins: +-20 Hz around the tone
    spread = 10 * np.log10((spectra * ~band).sum(axis=1) / (spectra * band).sum(axis=1))
    return step, float(spread.max())
