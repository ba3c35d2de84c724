"""``audio: usb`` picks the USB sound card by its ALSA id, in the direction asked for, from the
kernel's /proc/asound layout (here a copy of that layout: this machine has no sound card; the
QEMU image test plays through a real snd-usb-audio card); the status names the card it
resolved to, the one in use now; the image's defaults file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from devtools.box.fakes import PBX_ADDR, FakeAudio, FakeBox, run
from firmware.config import ConfigError, load_config, load_defaults
from firmware.media.alsa import usb_card
from firmware.media.audio import AudioError
from firmware.sip.sdp import LocalMedia


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


class Dongles(FakeAudio):
    """Every side an ALSA name, ``usb`` resolved by the product's ``usb_card`` against a copy
    of /proc/asound at each probe and open, as the real one does (no PCM is opened)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def is_device(self, spec: str) -> bool:
        return True

    def probe(self, spec: str, capture: bool) -> str:
        return usb_card(capture, root=str(self.root)) if spec == "usb" else spec

    def open(self, spec: str, capture: bool) -> Any:
        side = super().open(spec, capture)
        side.card_pcm = self.probe(spec, capture)  # as media.alsa's workers name their PCM
        return side


def test_status_names_the_card_usb_resolved_to_now(tmp_path: Path) -> None:
    card(tmp_path, 0, "Headphones", usb=False, pcms=("pcm0p",))
    card(tmp_path, 1, "Device", usb=True, pcms=("pcm0p", "pcm0c"))
    box = FakeBox(audio={"capture": "usb", "playback": "usb"})
    box.app.media_control.audio = Dongles(tmp_path)

    def devices() -> tuple[str | None, str | None]:
        audio = box.app.status()["audio"]
        assert audio["capture"] == audio["playback"] == "usb"  # the configured name stays
        return audio["capture_device"], audio["playback_device"]

    def call() -> None:
        box.board.press("call")
        box.pump()
        box.pbx.answer(LocalMedia(PBX_ADDR[0], 30000), box.clock.now)
        box.pump()

    def hang_up() -> None:
        box.board.press("hangup")
        box.pump()
        assert box.app.state == "idle"

    async def scenario() -> None:
        await box.app.start()
        first = ("plughw:CARD=Device,DEV=0",) * 2
        assert devices() == first, "the start-up probe's card"
        call()
        assert box.app.state == "in_call" and devices() == first
        hang_up()
        assert devices() == first, "the last call's card, once it ended"
        # the dongle swapped for another between calls: the next call resolves `usb` afresh
        shutil.rmtree(tmp_path / "card1")
        card(tmp_path, 2, "Dongle", usb=True, pcms=("pcm0p", "pcm0c"))
        call()
        assert box.app.state == "in_call" and devices() == ("plughw:CARD=Dongle,DEV=0",) * 2
        hang_up()
        # and none at all: nothing is open, the error says why
        shutil.rmtree(tmp_path / "card2")
        call()
        assert devices() == (None, None)
        assert "no USB sound card" in box.app.status()["audio"]["error"]
        await box.app.stop()

    run(scenario())


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
