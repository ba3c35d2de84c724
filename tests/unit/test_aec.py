"""Echo cancellers (firmware.core._aec) in a simulated room: speech from espeak-ng played through a
delayed, reverberant, soft-clipping echo path with background noise, the real speexdsp and
WebRTC libraries driven frame by frame through the capture-processor hook's Python face.

Bounds are on quality at fixed seeds (ERLE, the visitor's voice in double talk, convergence in
seconds of audio), never on wall-clock time. tests/room.py has the room and the figures.
"""

from __future__ import annotations

import pytest

from tests import compiled

pytest.importorskip("firmware.core._aec", reason=compiled.REASON)
pytest.importorskip("numpy", reason=compiled.EXTRAS_REASON)
import numpy as np

from devtools import room
from firmware.config import AudioSettings
from firmware.core import _aec

pytestmark = pytest.mark.compiled

KINDS = ["speex", "webrtc"]


def default_kind() -> str:
    return AudioSettings().echo_canceller


def test_the_default_canceller_is_a_real_one() -> None:
    assert default_kind() in KINDS
    assert _aec.unavailable(default_kind()) is None


@pytest.mark.parametrize("kind", KINDS)
def test_room_erle_convergence_and_path_change(kind: str) -> None:
    """Far-end speech through 40 ms + a 40 ms room response at -10 dB: at least 20 dB of echo
    gone once converged, within 3 s of audio, and again after the echo path changes."""
    r = room.measure(_aec.create(kind))
    print(kind, r)
    assert r.erle_db >= 20, f"{kind}: ERLE {r.erle_db:.1f} dB after convergence"
    assert r.convergence_s <= 3.0, f"{kind}: 15 dB ERLE only after {r.convergence_s} s"
    assert r.erle_after_dt_db >= 20, f"{kind}: ERLE {r.erle_after_dt_db:.1f} dB after double talk"
    assert r.reconverge_s <= 3.0, f"{kind}: re-converged only after {r.reconverge_s} s"
    assert r.erle_changed_db >= 20, f"{kind}: ERLE {r.erle_changed_db:.1f} dB on the new path"


def test_without_a_canceller_the_room_echo_stays() -> None:
    """The yardstick: the same room with no processing has no echo loss at all."""
    r = room.measure(None)
    assert abs(r.erle_db) < 0.5 and r.convergence_s == float("inf")


@pytest.mark.parametrize("kind", KINDS)
def test_double_talk_keeps_the_visitors_voice(kind: str) -> None:
    """The visitor talks over the reception: each canceller passes their voice at nearly full
    level and recognisably (correlation with the near-end-only signal)."""
    r = room.measure(_aec.create(kind))
    print(kind, r.near)
    assert r.near.level_db >= -6, f"the visitor's voice lost {-r.near.level_db:.1f} dB"
    assert r.near.correlation >= 0.7, f"the visitor's voice correlates {r.near.correlation:.2f}"
    assert r.near.lag_ms <= 30, f"the canceller delays speech by {r.near.lag_ms} ms"


@pytest.mark.parametrize("coupling_db,delay_ms", [(-6.0, 20.0), (-12.0, 80.0)])
def test_coupling_and_delay_range(coupling_db: float, delay_ms: float) -> None:
    """The ends of the range: a loud speaker 20 ms away and a quieter one 80 ms away (plus the
    40 ms room response: 120 ms of a 128 ms tail)."""
    sc = room.Scenario(room=room.Room(delay_ms=delay_ms, coupling_db=coupling_db))
    r = room.measure(_aec.create(default_kind()), sc)
    assert r.erle_db >= 20, f"ERLE {r.erle_db:.1f} dB at {coupling_db} dB / {delay_ms} ms"


def test_reported_fifo_backlog_lines_the_reference_up() -> None:
    """100 ms of playback backlog (what the hook reports as ``queued``) + 40 ms in the air +
    the room: 180 ms, beyond the 128 ms tail; the delay line takes the backlog out."""
    sc = room.Scenario(room=room.Room(fifo_ms=100.0),
                       changed=room.Room(fifo_ms=100.0, delay_ms=55.0, seed=7))
    c = _aec.create(default_kind())
    r = room.measure(c, sc)
    assert r.erle_db >= 20, f"ERLE {r.erle_db:.1f} dB with a 100 ms playback backlog"
    assert c.delay == 800 - c.margin  # the backlog less the margin kept for the air


def test_sound_card_buffer_lines_the_reference_up() -> None:
    """The card's own buffers (ALSA's playback buffer + a capture period, ``device_delay``)
    are not in any FIFO: the caller tells the canceller; 120 ms of them + 40 ms in the air."""
    card = 960  # 4 x 20 ms playback + 20 ms capture at 8 kHz
    played, near, mic = room.Scenario(room=room.Room(delay_ms=40.0 + 120.0)).signals()
    c = _aec.create(default_kind(), device_delay=card)
    out = room.run(c, played, mic)
    assert room.erle_db(mic, out, 5.0, 10.0) >= 20
    assert c.delay == card - c.margin


@pytest.mark.parametrize("ptime", [10, 30, 40])
def test_other_packet_times(ptime: int) -> None:
    """Frames of 10, 30 and 40 ms are cut into the libraries' blocks: speex takes 20 ms blocks
    where the frame is made of them, else 10 ms; WebRTC always 10 ms."""
    played, _, mic = room.Scenario(seconds=10.0).signals()
    n = 8 * ptime
    c = _aec.create(default_kind(), frame_samples=n)
    assert c.block == (160 if c.name == "speex" and ptime % 20 == 0 else 80)
    out = bytearray()
    pp, pm = room.to_pcm(played), room.to_pcm(mic)
    for i in range(0, len(pm) // (2 * n) * 2 * n, 2 * n):
        c.playback(pp[i:i + 2 * n])
        out += c.capture(pm[i:i + 2 * n])
    y = np.frombuffer(bytes(out), dtype="<i2").astype(np.float64)
    assert room.erle_db(mic, y, 5.0, 9.5) >= 20


def test_a_moving_backlog_moves_the_reference_once_it_settles() -> None:
    """A backlog that jumps for one frame does not move the reference; one that stays off by
    more than 20 ms for half a second does, once (after the first half second, which follows
    the queues as they fill)."""
    c = _aec.create("speex")
    silent = bytes(320)
    for _ in range(25):
        c.playback(silent, 400)
        c.capture(silent)
    start = c.delay
    c.playback(silent, 1200)  # one late tick
    c.capture(silent)
    c.playback(silent, 400)
    c.capture(silent)
    assert (c.delay, c.delay_changes) == (start, 0)
    for _ in range(30):
        c.playback(silent, 1200)
        c.capture(silent)
    assert (c.delay, c.delay_changes) == (start + 800, 1)


def test_the_first_half_second_follows_a_playback_queue_as_it_fills() -> None:
    """A card's playback starts behind its prefill at the first write: the first frames see an
    empty queue, then the prefill (15 ms: less than the 20 ms a settled figure must be off by
    to move). The reference follows it there, not the empty queue of the first frame."""
    c = _aec.create("speex", tail_ms=16)
    silent = bytes(320)
    c.capture(silent)
    for _ in range(30):
        c.playback(silent, 120)
        c.capture(silent)
    assert (c.delay, c.delay_changes) == (120 - c.margin, 0)


def test_bad_choices_are_one_line_errors() -> None:
    with pytest.raises(_aec.AecError, match="unknown echo canceller 'echo'"):
        _aec.create("echo")
    with pytest.raises(_aec.AecError, match="between 16 and 500 ms"):
        _aec.create("speex", tail_ms=5000)
    assert _aec.create("off") is None
    assert _aec.webrtc_version() in ("0.3", "1.x")  # build.sh installs the library


def test_odd_sized_and_empty_frames_pass_without_harm() -> None:
    c = _aec.create(default_kind())
    assert c.capture(b"") == b""
    c.playback(b"")
    odd = room.to_pcm(np.full(50, 1000.0))  # less than a 10 ms block: left as it is
    assert c.capture(odd) == odd


def test_config_keys() -> None:
    from firmware.config import ConfigError, parse_config

    base = "sip:\n  server: pbx.local\n  username: 5002\naudio:\n"
    cfg = parse_config(base + "  echo_canceller: off\n  echo_tail_ms: 200\n"
                       "  noise_suppression: true\n  agc: true\n")
    a = cfg.audio
    assert (a.echo_canceller, a.echo_tail_ms, a.noise_suppression, a.agc) == \
        ("off", 200, True, True)
    assert parse_config(base + "  capture: silence\n").audio.echo_canceller == default_kind()
    for bad, needle in (("  echo_canceller: echo\n", "must be one of off, speex, webrtc"),
                        ("  echo_canceller: true\n", "must be one of off, speex, webrtc"),
                        ("  echo_tail_ms: 5000\n", "must be between 16 and 500")):
        with pytest.raises(ConfigError, match=needle) as info:
            parse_config(base + bad)
        assert "\n" not in str(info.value)


def _level_change_db(kind: str, mic: np.ndarray, **options: bool) -> float:
    """Output level against input level (dB) with no far end, after 5 s of adaptation."""
    out = room.run(_aec.create(kind, **options), np.zeros(len(mic)), mic)
    a = 5 * room.RATE
    return float(10 * np.log10(np.mean(out[a:] ** 2) / np.mean(mic[a:] ** 2)))


@pytest.mark.parametrize("kind", KINDS)
def test_noise_suppression_lowers_steady_noise(kind: str) -> None:
    noise = room.Room(noise_dbfs=-40.0).noise(12 * room.RATE)
    assert abs(_level_change_db(kind, noise)) < 1.0, "without it the noise is left alone"
    assert _level_change_db(kind, noise, noise_suppression=True) <= -10.0


@pytest.mark.parametrize("kind", KINDS)
def test_agc_lifts_a_quiet_visitor(kind: str) -> None:
    n = 12 * room.RATE
    quiet = room.speech(room.NEAR_TEXT, "en+f3", 170, -38.0, 12.0) + \
        room.Room(noise_dbfs=-70.0).noise(n)
    assert abs(_level_change_db(kind, quiet)) < 1.0, "without it the level is left alone"
    assert _level_change_db(kind, quiet, agc=True) >= 10.0
