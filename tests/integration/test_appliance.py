"""The whole box, in-process with gpiozero's MockFactory and real alsa-lib (file plugin), against
a real Asterisk 22 and baresip: LEDs by pin history, buttons by driving pins, audio by FFT."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from devtools.box.in_process import PINS, Box, toggles  # noqa: F401
from devtools.box.process import Intercom
from devtools.waiting import wait_for

from ..audio import pcm_array, peak_hz, wav_array
from .alsa_env import reset_speaker, speaker_pcm, write_mic_tone
from .freeze import thread_stopped

pytestmark = pytest.mark.integration
def test_reception_calls_the_door(asterisk, box, baresip, tmp_path: Path) -> None:
    write_mic_tone(700)
    reset_speaker()
    rec = tmp_path / "rec"
    rec.mkdir()
    phone = baresip("5001", tone_hz=1000, record_dir=rec)
    b = box()
    b.wait_state("idle")
    assert b.pin("registered").state and not b.pin("error").state
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    b.wait_state("ringing")
    n0 = len(b.pin("ringing").states)
    time.sleep(1.1)
    assert toggles(b.pin("ringing"), n0) >= 3, "the ringing LED blinks at 2 Hz"
    assert b.status()["leds"]["ringing"] == "blinking"
    b.press("answer")
    phone.wait_event("CALL_ESTABLISHED", 10)
    st = b.wait_state("in_call")
    assert st["leds"]["in_call"] == "on" and st["leds"]["ringing"] == "off"
    assert b.pin("in_call").state
    time.sleep(3)
    phone.command("sndcode", "*1")
    wait_for(lambda: b.pin("relay").state, 10, 0.02, "the door relay")
    assert b.status()["door_openings"] == 1
    wait_for(lambda: not b.pin("relay").state, 3, 0.02, "the relay pulse to end")
    st = b.status()
    rtp = st["rtp"]
    # status shows the card-vs-network drift (ALSA sides are drift-controlled) and the echo
    # canceller (speex by default) at work on this call
    assert isinstance(rtp["drift_ppm"], float) and rtp["capture_fifo_max_ms"] >= 0
    assert st["audio"]["aec"]["kind"] == "speex" and st["audio"]["aec"]["frames"] > 100
    b.press("hangup")
    phone.wait_event("CALL_CLOSED", 10)
    assert b.wait_state("idle")["last_call_end"] == "local hangup"
    heard = pcm_array(speaker_pcm())
    assert len(heard) > 8000 * 3
    assert abs(peak_hz(heard[8000:]) - 1000) < 15, "the speaker played the phone's 1000 Hz"
    dec = [p for p in rec.glob("*dec.wav")]
    y, rate = wav_array(max(dec, key=lambda p: p.stat().st_size))
    assert abs(peak_hz(y[rate:], rate) - 700) < 15, "the phone heard the door's microphone"
    assert rtp["received"] > 100 and rtp["dtmf_received"] == 2


def test_call_button_rings_reception(asterisk, box, baresip, tmp_path: Path) -> None:
    write_mic_tone(600)
    reset_speaker()
    rec = tmp_path / "rec"
    rec.mkdir()
    phone = baresip("5001", answer="auto", tone_hz=1200, record_dir=rec)
    b = box()
    b.wait_state("idle")
    b.press("call")
    phone.wait_event("CALL_ESTABLISHED", 15)
    b.wait_state("in_call")
    time.sleep(3)
    phone.command("hangup")
    st = b.wait_state("idle")
    assert st["last_call_end"] == "remote hangup" and not b.pin("in_call").state
    heard = pcm_array(speaker_pcm())
    assert abs(peak_hz(heard[8000:]) - 1200) < 15
    y, rate = wav_array(max(rec.glob("*dec.wav"), key=lambda p: p.stat().st_size))
    assert abs(peak_hz(y[rate:], rate) - 600) < 15


def test_leds_follow_the_pbx(asterisk, box) -> None:
    b = box(sip={"keepalive_interval": 1, "t1": 0.1, "t2": 0.4, "t4": 0.5})
    b.wait_state("idle")
    asterisk.stop()
    b.wait_state("offline", 20)
    t0 = time.monotonic()
    wait_for(lambda: not b.pin("registered").state, 5, 0.05, "registered LED off")
    since = len(b.pin("error").states)
    time.sleep(0.6)
    assert toggles(b.pin("error"), since) >= 4, "error LED blinks fast"
    assert b.status()["leds"]["error"] == "blinking"
    asterisk.start()
    b.wait_state("idle", 15)
    assert b.pin("registered").state
    time.sleep(0.3)
    assert not b.pin("error").state and time.monotonic() - t0 < 30


def test_missing_audio_device_refuses_calls_with_480(asterisk, box, baresip) -> None:
    phone = baresip("5001")
    b = box(audio={"capture": "no_such_pcm", "playback": "box_speaker"})
    st = b.wait_state("idle")
    assert st["audio"]["state"] == "error" and "no_such_pcm" in st["audio"]["error"]
    assert st["leds"]["error"] == "blinking"
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    phone.wait_event("CALL_CLOSED", 10)
    st = b.status()
    assert st["state"] == "idle"
    assert st["last_call_end"] == "rejected (480 Temporarily Unavailable)"


def test_press_command_and_systemd_notifications(asterisk, tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    notify.bind(str(path))
    notify.settimeout(10)
    box = Intercom(tmp_path / "sub", asterisk.port,
                   env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"})
    box.start()
    try:
        first = notify.recv(4096).decode()
        assert first.startswith("READY=1\nSTATUS=")
        messages = [notify.recv(4096).decode() for _ in range(4)]
        assert "WATCHDOG=1" in messages
        box.wait_state("idle")
        reply = box.cmd("press", "nosuchbutton")
        assert not reply["ok"] and "call" in reply["error"]
        assert box.cmd("press", "call")["ok"]
        # nobody is registered as 5001: the box's dial-plan context (no Answer()) refuses the
        # call with 480 at once, so the call may be over before a status query sees "calling"
        st = wait_for(lambda: (s := box.status()).get("state") in ("calling", "in_call") and s
                      or "480" in (s.get("last_call_end") or "") and s, 10)
        assert st["remote"] == "5001" or st["last_call_end"].startswith("480"), st
    finally:
        box.stop()
        notify.close()


class NotifyListener:
    """The systemd side of NOTIFY_SOCKET: every datagram with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data.decode()))

    def pings(self, start: float, end: float) -> list[float]:
        return [t for t, m in self.got if start <= t <= end and "WATCHDOG=1" in m.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_watchdog_pings_stop_when_media_or_event_loop_stall(
        asterisk, box, baresip, tmp_path: Path, monkeypatch, caplog) -> None:
    """Read what systemd reads. WATCHDOG_USEC=0.4 s: a ping every 0.2 s while healthy; none
    while the media thread is alive but stopped (ticks do not advance), while the event loop is
    blocked, or after the media loop died under the call; pings resume once each is over."""
    interval = 0.2
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", str(int(interval * 2 * 1e6)))
    write_mic_tone(500)
    phone = baresip("5001", answer="auto")
    try:
        b = box()
        b.wait_state("idle")
        assert listener.got and listener.got[0][1].startswith("READY=1\nSTATUS=")

        def healthy_for(seconds: float) -> None:
            t0 = time.monotonic()
            time.sleep(seconds)
            got = listener.pings(t0, time.monotonic())
            assert len(got) >= seconds / interval * 0.6, (len(got), seconds)

        def silent(start: float, end: float, what: str) -> None:
            # the check in the interval the stall began may still pass: skip one interval
            late = listener.pings(start + interval + 0.1, end)
            assert late == [], f"WATCHDOG=1 sent while {what}: {[t - start for t in late]}"

        healthy_for(1.0)  # idle
        b.press("call")
        phone.wait_event("CALL_ESTABLISHED", 15)
        b.wait_state("in_call")
        healthy_for(1.0)  # in a call, the media loop ticking
        session = b.app.media_control.session
        assert session is not None and session._loop_thread is not None

        # 1. the media thread is alive but does not tick
        with thread_stopped(session._loop_thread.native_id):
            start = time.monotonic()
            ticks = session.stats()["ticks"]
            time.sleep(1.5)
            assert session.stats()["ticks"] == ticks and session.running
            end = time.monotonic()
        silent(start, end, "the media loop was stopped")
        assert "media loop stalled: withholding the watchdog ping" in caplog.text
        healthy_for(1.0)

        # 2. the event loop is blocked (a handler that never yields)
        start = time.monotonic()
        b.loop.call_soon_threadsafe(time.sleep, 1.5)
        time.sleep(1.5)
        end = time.monotonic()
        silent(start, end - 0.1, "the event loop was blocked")
        healthy_for(1.0)

        # 3. the media loop dies under the call: no ping until the call is over
        assert session.stream is not None
        session.stream.stop()
        start = time.monotonic()
        time.sleep(1.0)
        silent(start, time.monotonic(), "the media loop was dead")
        phone.command("hangup")
        b.wait_state("idle")
        healthy_for(1.0)
    finally:
        listener.close()


def test_ring_tone_plays_on_the_box_while_ringing(asterisk, box, baresip) -> None:
    write_mic_tone(700)
    reset_speaker()
    phone = baresip("5001")
    b = box(calls={"ring_tone": True})
    b.wait_state("idle")
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    b.wait_state("ringing")
    time.sleep(1.5)
    phone.command("hangup")
    b.wait_state("idle")
    time.sleep(0.2)
    heard = pcm_array(speaker_pcm())
    assert len(heard) >= 8000, "about a second of ring tone reached the speaker"
    spectrum = np.abs(np.fft.rfft(heard[:8000] * np.hanning(8000)))
    freqs = np.fft.rfftfreq(8000, 1 / 8000)
    top2 = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert abs(top2[0] - 400) < 5 and abs(top2[1] - 450) < 5, top2
