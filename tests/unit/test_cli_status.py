"""`intercom status` for people: during a call it says what the audio is doing."""

from __future__ import annotations

import pytest

from firmware.cli import _print_status

BASE = {"username": "5002", "server": "pbx", "transport": "udp", "registered": True,
        "state": "in_call", "remote": "sip:5001@pbx", "call_duration": 12}


def test_in_call_status_shows_loss_drift_and_the_echo_canceller(capsys: pytest.CaptureFixture[str]
                                                                ) -> None:
    st = {**BASE, "rtp": {"lost": 3, "concealed_ms": 60, "bridged_ms": 40,
                          "buffer_depth_ms": 40, "drift_ppm": -183.26},
          "audio": {"aec": {"kind": "speex", "frames": 600, "delay_ms": 97.5, "card_ms": 100.0,
                            "delay_changes": 0, "errors": 0}}}
    _print_status(st)
    out = capsys.readouterr().out
    assert ("3 lost, 60 ms concealed (40 ms bridged), jitter buffer 40 ms, sound card drift "
            "-183.3 ppm") in out
    assert "echo canceller: speex, reference delay 98 ms (100 ms in the sound card)" in out


def test_in_call_status_shows_when_the_loop_sends(capsys: pytest.CaptureFixture[str]) -> None:
    rtp = {"lost": 0, "send_lag_p99_us": 40.0, "send_lag_max_us": 310.2, "late_sends": 0,
           "work_p99_us": 8150.0, "lead_us": 10290.5}
    _print_status({**BASE, "rtp": rtp, "audio": {"aec": {}}})
    out = capsys.readouterr().out
    assert ("media loop timing: packets at the socket 40 µs after their deadline (p99; max 310, "
            "0 over 1 ms), work per tick 8150 µs (p99), done 10290 µs ahead") in out
    assert "periods" not in out
    _print_status({**BASE, "rtp": {**rtp, "lead_us": 0.0}, "audio": {"aec": {}}})
    assert "done at the deadline" in capsys.readouterr().out
    # on the card loop: how far the card's periods strayed from the clock the packets keep
    _print_status({**BASE, "rtp": {**rtp, "card_jitter_p99_us": 90.0}, "audio": {"aec": {}}})
    assert ("done 10290 µs ahead; the card's periods 90 µs off its clock (p99)"
            in capsys.readouterr().out)
    # who paces the packets, and the interface and qdisc that decided it
    _print_status({**BASE, "rtp": {**rtp, "pacing": "kernel", "egress": "eth0 (fq)"},
                   "audio": {"aec": {}}})
    assert ("done 10290 µs ahead; sent at their times by the kernel (way out: eth0 (fq))\n"
            in capsys.readouterr().out)
    _print_status({**BASE, "rtp": {**rtp, "pacing": "loop", "egress": "lo (noqueue)"},
                   "audio": {"aec": {}}})
    assert "sent at their times by the loop (way out: lo (noqueue))" in capsys.readouterr().out


def test_idle_status_has_no_audio_lines(capsys: pytest.CaptureFixture[str]) -> None:
    _print_status({**BASE, "state": "idle", "remote": None, "rtp": {}, "audio": {"aec": {}}})
    out = capsys.readouterr().out
    assert "state: idle" in out and "audio:" not in out and "echo canceller" not in out


def test_audio_line_names_the_device_usb_resolved_to(capsys: pytest.CaptureFixture[str]) -> None:
    audio = {"capture": "silence", "playback": "usb", "capture_device": None,
             "playback_device": "plughw:CARD=Audio,DEV=0", "aec": {}}
    _print_status({**BASE, "state": "idle", "remote": None, "rtp": {}, "audio": audio})
    assert "audio: capture silence, playback usb (plughw:CARD=Audio,DEV=0)\n" in \
        capsys.readouterr().out
    _print_status({**BASE, "rtp": {"lost": 3}, "audio": audio})
    assert "audio: capture silence, playback usb (plughw:CARD=Audio,DEV=0); 3 lost, " in \
        capsys.readouterr().out
    # a name that is the device itself is not repeated
    _print_status({**BASE, "state": "idle", "remote": None, "rtp": {},
                   "audio": {**audio, "playback": "hw:1", "playback_device": "hw:1"}})
    assert "audio: capture silence, playback hw:1\n" in capsys.readouterr().out
