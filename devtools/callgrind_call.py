"""A loopback call for instruction counts: two media sessions of the box calling each other on
127.0.0.1 for N seconds, meant to run under ``valgrind --tool=callgrind --separate-threads=yes``.

Instructions are what callgrind counts exactly, whatever the machine's load (wall-clock CPU
figures on a shared box are not); kernel time (the wake-ups, the syscalls) is not in them.

    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=/tmp/cg.%p \\
        .venv/bin/python -m devtools.callgrind_call 10 [--alsa] [--aec speex]
    grep -m1 ^summary /tmp/cg.*-0*    # one file per thread, in start order

Thread files without ``--alsa``: 01 main, 02 A's loop, 03 B's loop (tone:700 / tone:1000
sources, null sinks: the benchmark's path, made and dropped inside the loop, no pump thread;
``--pump`` puts them back on the Python audio pump: 03 A's pump, 04 B's loop, 05 B's pump,
for comparison). With ``--alsa`` the
source and sink attach like ``media.alsa`` (a thread each moving 160 samples every 20 ms, drift
control on both sides): 02 A's capture card, 03 A's playback card, 04 A's loop, then B's.
The run prints each session's ticks on stderr: divide a loop thread's total by them.
Knows nothing about SIP: it builds MediaParams itself.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from firmware.events import MediaParams
from firmware.media.audio import NullSink, ToneSource
from firmware.media.stream import RtpPorts, RtpSession, StreamSettings


class PacedCard:
    """A sound card stand-in that feeds or drains its FIFO 160 samples every 20 ms."""

    latency_samples = 160

    def __init__(self, capture: bool, frequency: float) -> None:
        self.capture = capture
        self.tone = ToneSource(frequency)
        self.stopped = threading.Event()
        self.fifo: object = None

    def attach(self, fifo: object) -> None:
        self.fifo = fifo
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        due = time.monotonic()
        while not self.stopped.is_set():
            due += 0.02
            time.sleep(max(0.0, due - time.monotonic()))
            if self.capture:
                self.fifo.write(self.tone.read(160))  # type: ignore[attr-defined]
            else:
                self.fifo.read(160)  # type: ignore[attr-defined]

    def read(self, samples: int) -> bytes:
        return b""

    def write(self, pcm: bytes) -> None:
        pass

    def close(self) -> None:
        self.stopped.set()


class Pumped:
    """A source or sink without the loop-side shortcut (no ``cycle``, no ``discards``): the
    same tone and the same nothing, moved by the Python audio pump."""

    def __init__(self, inner: ToneSource | NullSink) -> None:
        self.inner = inner

    def read(self, samples: int) -> bytes:
        return self.inner.read(samples)  # type: ignore[union-attr]

    def write(self, pcm: bytes) -> None:
        self.inner.write(pcm)  # type: ignore[union-attr]

    def close(self) -> None:
        self.inner.close()


def session(port: RtpPorts, frequency: float, alsa: bool, aec: str,
            pump: bool = False) -> RtpSession:
    settings = StreamSettings(echo_canceller=aec)
    if alsa:
        return RtpSession(port, PacedCard(True, frequency), PacedCard(False, frequency), settings)
    if pump:
        return RtpSession(port, Pumped(ToneSource(frequency)), Pumped(NullSink()), settings)
    return RtpSession(port, ToneSource(frequency), NullSink(), settings)


def media_to(port: int) -> MediaParams:
    return MediaParams(remote_addr="127.0.0.1", remote_port=port, payload_type=0, codec="PCMU",
                       dtmf_payload_type=101, ptime=20, direction="sendrecv")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seconds", type=float)
    ap.add_argument("--alsa", action="store_true", help="paced card threads, drift control on")
    ap.add_argument("--aec", default="off", choices=("off", "speex", "webrtc"))
    ap.add_argument("--pump", action="store_true",
                    help="tone and null sink through the Python audio pump (the old path)")
    args = ap.parse_args(argv)
    pa, pb = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    a = session(pa, 700, args.alsa, args.aec, args.pump)
    b = session(pb, 1000, args.alsa, args.aec, args.pump)
    a.start(media_to(pb.port))
    b.start(media_to(pa.port))
    time.sleep(args.seconds)
    sa, sb = a.stats(), b.stats()
    for s in (a, b):
        s.stop()
        s.source.close()
        s.sink.close()
    pa.close()
    pb.close()
    print(f"ticks A {sa['ticks']} B {sb['ticks']}; received A {sa['received']} "
          f"B {sb['received']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
