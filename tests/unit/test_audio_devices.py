"""``audio: usb`` picks the USB sound card by its ALSA id, in the direction asked for, from the
kernel's /proc/asound layout (here a copy of that layout: this machine has no sound card; the
QEMU image test plays through a real snd-usb-audio card); the image's defaults file."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.config import ConfigError, load_config, load_defaults
from firmware.media.alsa import usb_card
from firmware.media.audio import AudioError


def card(root: Path, n: int, card_id: str, usb: bool, pcms: tuple[str, ...]) -> None:
    d = root / f"card{n}"
    d.mkdir(parents=True)
    (d / "id").write_text(card_id + "\n")
    if usb:
        (d / "usbid").write_text("0d8c:0014\n")
    for pcm in pcms:
        (d / pcm).mkdir()


def test_usb_card_by_id_and_direction(tmp_path: Path) -> None:
    card(tmp_path, 0, "Headphones", usb=False, pcms=("pcm0p",))  # the Pi's jack: not USB
    card(tmp_path, 1, "Speaker", usb=True, pcms=("pcm0p",))       # USB, playback only
    card(tmp_path, 2, "Device", usb=True, pcms=("pcm0p", "pcm0c"))
    assert usb_card(capture=False, root=str(tmp_path)) == "plughw:CARD=Speaker,DEV=0"
    assert usb_card(capture=True, root=str(tmp_path)) == "plughw:CARD=Device,DEV=0"


def test_no_usb_card_is_a_clear_error(tmp_path: Path) -> None:
    card(tmp_path, 0, "Headphones", usb=False, pcms=("pcm0p",))
    with pytest.raises(AudioError, match="no USB sound card with a microphone input"):
        usb_card(capture=True, root=str(tmp_path))


def test_defaults_file_sits_under_the_installers_yaml(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("audio:\n  capture: usb\n  playback: usb\n")
    monkeypatch.setenv("INTERCOM_DEFAULTS", str(defaults))
    cfg = tmp_path / "intercom.yaml"
    cfg.write_text("sip: {server: pbx, username: '5002'}\naudio: {playback: 'plughw:CARD=X'}\n")
    loaded = load_config(cfg)
    assert loaded.audio.capture == "usb"
    assert loaded.audio.playback == "plughw:CARD=X"
    defaults.write_text("audio:\n  captur: usb\n")
    with pytest.raises(ConfigError, match="unknown key audio.captur in the defaults file"):
        load_defaults()
