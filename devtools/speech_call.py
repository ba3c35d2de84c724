"""One speech call through Asterisk with an impaired far end, for tests and benchmarks.

    far end (SIPp signalling + a paced PCMU sender) --ImpairedLink--> Asterisk --> client

The client under test is the intercom (``python -m firmware run``, auto-answering, playing into
a WAV file) or baresip (auto-answering, its sndfile module recording what it decoded). The far
end calls it as extension 5003; its SDP names the relay, so every RTP packet from the far end
to Asterisk crosses the relay's loss and jitter. The result is the clean speech as sent and
what the client played, lined up, with PESQ (P.862 narrow band) and the relay's counts.

Knows the peers' command lines (devtools.asterisk, .baresip, .box), not the firmware's internals.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devtools.asterisk import PASSWORDS, Asterisk
from devtools.baresip import Baresip
from devtools.box.process import Intercom
from devtools.impair import ImpairedLink
from devtools.loopback import free_port
from devtools.realtime import realtime
from devtools.speech import align, pesq_nb, speech
from devtools.waiting import wait_for
from firmware import _rtpcore as core

SCENARIO = Path(__file__).parent / "sipp" / "far_end.xml"
LEAD_S = 1.0  # silence before and after the speech


@dataclass(frozen=True)
class Condition:
    name: str
    loss: float = 0.0
    burst: float | None = None  # mean burst length (packets): Gilbert-Elliott
    delay: float = 0.0
    jitter: float = 0.0


CONDITIONS = (
    Condition("clean"),
    Condition("0 % loss, 20-60 ms jitter", 0.0, None, 0.040, 0.020),
    Condition("3 % random, 20-60 ms jitter", 0.03, None, 0.040, 0.020),
    Condition("3 % bursty (GE, mean 3), 20-60 ms jitter", 0.03, 3.0, 0.040, 0.020),
)


@dataclass
class SpeechResult:
    client: str
    condition: Condition
    pesq: float
    lag_ms: float
    sent: int
    dropped: int
    heard_s: float


def _send(sock: socket.socket, dest: tuple[str, int], pcm: np.ndarray,
          stop: threading.Event) -> int:
    """Paced PCMU, 20 ms per packet, on absolute deadlines."""
    data = np.clip(np.round(pcm), -32768, 32767).astype("<i2").tobytes()
    t0 = time.monotonic()
    n = len(data) // 320
    for k in range(n):
        if stop.is_set():
            return k
        payload = core.encode_ulaw(data[k * 320:(k + 1) * 320])
        sock.sendto(core.rtp_pack(0, k == 0, k & 0xFFFF, 160 * k, 0x5EEC4, payload), dest)
        delay = t0 + 0.020 * (k + 1) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return n


def _heard_baresip(record: Path) -> np.ndarray:
    import wave

    decoded = [p for p in record.glob("*.wav") if "dec" in p.name]
    if not decoded:
        raise RuntimeError(f"baresip recorded nothing in {record}")
    with wave.open(str(max(decoded, key=lambda p: p.stat().st_size)), "rb") as w:
        rate, ch = w.getframerate(), w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    if rate != 8000:
        from devtools.speech import resample
        x = resample(x, rate, 8000)
    return x


def _heard_wav(path: Path) -> np.ndarray:
    import wave

    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def run_call(pbx: Asterisk, client: str, cond: Condition, tmp: Path, seed: int = 1,
             clean: np.ndarray | None = None, box_media: dict | None = None,
             baresip_modules: tuple[str, ...] = ()) -> SpeechResult:
    """One call: the far end sends ``clean`` (default: devtools.speech.speech()) to
    ``client`` ("intercom" or "baresip") through the relay under ``cond``."""
    tmp.mkdir(parents=True, exist_ok=True)
    talk = speech() if clean is None else clean
    lead = np.zeros(int(8000 * LEAD_S))
    sent_signal = np.concatenate([lead, talk, lead])
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    link = ImpairedLink(far.getsockname(), None, loss=cond.loss, delay=cond.delay,
                        jitter=cond.jitter, seed=seed, burst=cond.burst,
                        directions=("a>b",)).start()
    box: Intercom | None = None
    phone: Baresip | None = None
    stop = threading.Event()
    sipp: subprocess.Popen | None = None
    try:
        if client == "intercom":
            wav = tmp / "heard.wav"
            box = Intercom(tmp / "box", pbx.port, calls={"auto_answer": True},
                           audio={"capture": "silence", "playback": f"wav:{wav}"},
                           media=box_media or {}).start()
            wait_for(lambda: box.status().get("state") == "idle", 15, 0.1, "registration")
            service = "5002"
        elif client == "baresip":
            record = tmp / "record"
            record.mkdir(exist_ok=True)
            phone = Baresip(pbx, "5001", answer="auto", record_dir=record,
                            tmp=tmp / "baresip", modules=baresip_modules).start()
            service = "5001"
        else:
            raise ValueError(client)
        inf = tmp / "far.csv"
        inf.write_text(f"SEQUENTIAL\n127.0.0.1;{link.port_b};\n")
        hold_ms = int((len(sent_signal) / 8000 + 6) * 1000)
        sipp = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIO), "-inf", str(inf), "-s", service, "-i", "127.0.0.1",
             "-p", str(free_port()), "-au", "5003", "-ap", PASSWORDS["5003"], "-m", "1",
             "-d", str(hold_ms), "-timeout", "90s", "-timeout_error",
             "-nostdin", "-trace_err", f"127.0.0.1:{pbx.port}"],
            cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        # the client answers and its media reaches the relay through Asterisk: the far end's
        # destination is known from then on
        wait_for(lambda: link.b is not None or sipp.poll() is not None, 20, 0.05,
                 "Asterisk's RTP at the relay")
        if link.b is None:
            raise RuntimeError(f"the far end's call failed: {sipp.stderr.read().decode()[-800:]}")
        time.sleep(0.5)
        with realtime():  # the far end paces like a phone whatever the host's load
            sent = _send(far, ("127.0.0.1", link.port_a), sent_signal, stop)
        time.sleep(0.5 + cond.delay + cond.jitter)
        if client == "intercom":
            assert box is not None
            box.cmd("hangup")
            box.stop()
            heard = _heard_wav(tmp / "heard.wav")
        else:
            assert phone is not None
            phone.command("hangup")
            time.sleep(0.5)
            phone.stop()
            heard = _heard_baresip(tmp / "record")
    finally:
        stop.set()
        if sipp is not None and sipp.poll() is None:
            sipp.terminate()
            try:
                sipp.wait(5)
            except subprocess.TimeoutExpired:
                sipp.kill()
        if box is not None:
            box.stop()
        if phone is not None:
            phone.stop()
        link.stop()
        far.close()
    # a second of silence in front: a recording that starts after the first packet (baresip's)
    # lines up too
    heard = np.concatenate([np.zeros(8000), heard])
    aligned, lag = align(sent_signal, heard, max_lag=min(len(heard), 8000 * 15))
    return SpeechResult(client, cond, pesq_nb(sent_signal, aligned), lag / 8.0 - 1000, sent,
                        link.dropped_by["a>b"], len(heard) / 8000)
