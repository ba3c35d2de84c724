"""Call-progress tones on the box's own speaker: the ring tone while a call rings in, ringback
while the box calls out.

Owns the cadences and a paced player thread writing to any sink (ALSA sinks through a FIFO;
no thread at all for a sink that keeps nothing). Knows nothing about calls: it is started and
stopped.
"""

from __future__ import annotations

import functools
import math
import struct
import threading
import time

from .._rtpcore import PcmFifo
from .audio import RATE, Sink, discards

# (frequencies, on seconds, off seconds) per burst; the pattern repeats
Cadence = list[tuple[tuple[float, ...], float, float]]  # (frequencies, on s, off s)
CADENCES: dict[str, Cadence] = {
    "ring": [((400.0, 450.0), 0.4, 0.2), ((400.0, 450.0), 0.4, 2.0)],
    "ringback": [((425.0,), 1.0, 4.0)],
}
FRAME = 160


def _frame(freqs: tuple[float, ...], start: int, amplitude: float = 0.25) -> bytes:
    """The frame of ``freqs`` from sample ``start``. Whole-Hz tones repeat every second: such a
    frame is computed once per place in the second (at most 50 for a cadence) and then reused,
    instead of 160 x len(freqs) sin() calls in Python every 20 ms while the box rings."""
    if all(float(f).is_integer() for f in freqs):
        return _frame_in_second(freqs, start % RATE, amplitude)
    return _compute(freqs, start, amplitude)


@functools.lru_cache(maxsize=256)
def _frame_in_second(freqs: tuple[float, ...], start: int, amplitude: float) -> bytes:
    return _compute(freqs, start, amplitude)


def _compute(freqs: tuple[float, ...], start: int, amplitude: float) -> bytes:
    scale = amplitude * 32767 / len(freqs)
    return struct.pack(f"<{FRAME}h", *(
        int(scale * sum(math.sin(2 * math.pi * f * (start + i) / RATE) for f in freqs))
        for i in range(FRAME)))


class TonePlayer:
    def __init__(self, sink: Sink, kind: str) -> None:
        self.sink = sink
        self.cadence = CADENCES[kind]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tone-{kind}", daemon=True)
        self._fifo: PcmFifo | None = None
        if hasattr(sink, "attach"):
            self._fifo = PcmFifo(RATE)
            sink.attach(self._fifo)

    def start(self) -> None:
        if discards(self.sink):  # nobody hears it: no thread waking 50 times a second
            return
        self._thread.start()

    def _emit(self, pcm: bytes) -> None:
        if self._fifo is not None:
            self._fifo.write(pcm)
        else:
            self.sink.write(pcm)

    def _run(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            for freqs, on, off in self.cadence:
                for k in range(int((on + off) * RATE / FRAME)):
                    if self._stop.is_set():
                        return
                    if k * FRAME < on * RATE:
                        self._emit(_frame(freqs, n))
                    else:
                        self._emit(bytes(2 * FRAME))
                    n += FRAME
                    next_at += FRAME / RATE
                    self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(1.0)
        self.sink.close()
