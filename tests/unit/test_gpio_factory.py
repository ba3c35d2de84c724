"""Pin-factory choice and the GPIO-error path on this machine, which has no GPIO at all.

The kernel GPIO character-device factory itself (firmware.gpiocdev) drives real lines only in
the QEMU image tests (tests/image): this machine's kernel has no /dev/gpiochip*. Here: ``auto``
simulates pins only because there is no GPIO, and says so; a line that cannot be had is one
error naming the pin while the other devices still work; pin names parse as documented.
"""

from __future__ import annotations

import logging

import pytest
from gpiozero.pins.mock import MockFactory

from firmware.config import parse_config
from firmware.gpio import Board, GpioUnavailableError, has_gpio, make_pin_factory
from tests import compiled

try:  # the kernel GPIO factory stands on libgpiod's bindings (gpiod), a firmware dependency
    from firmware.gpiocdev import GpiodFactory, GpioLineError, canonical
except ImportError:
    GpiodFactory = None
needs_gpiod = pytest.mark.skipif(GpiodFactory is None, reason=compiled.EXTRAS_REASON + " (gpiod)")

BASE = "sip:\n  server: pbx\n  username: '5002'\n"


def test_auto_simulates_only_without_gpio(caplog: pytest.LogCaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    assert not has_gpio(), "this test describes a machine without GPIO"
    with caplog.at_level(logging.WARNING, "intercom.gpio"):
        factory = make_pin_factory("auto")
    assert isinstance(factory, MockFactory)
    assert "no GPIO" in caplog.text and "simulated" in caplog.text
    board = Board(parse_config(BASE).gpio, factory, lambda name: None)
    try:
        assert board.report() == {"factory": "simulated", "simulated": True, "errors": []}
    finally:
        board.close()


@needs_gpiod
def test_explicit_gpiod_without_chips_names_every_pin_and_keeps_going() -> None:
    cfg = parse_config(BASE + "gpio:\n  relay: {pin: 26}\n")
    board = Board(cfg.gpio, GpiodFactory(paths=[]), lambda name: None)
    try:
        report = board.report()
        assert report["factory"] == "gpiod" and not report["simulated"]
        errors = report["errors"]
        assert len(errors) == 4 + 5 + 1  # every button, LED and the relay of the profile
        assert "button 'call' on GPIO17: no GPIO line of that name" in errors[0]
        assert any(e.startswith("door relay on GPIO26") for e in errors)
        assert board.buttons == {} and board.relay is None
        board.pulse_relay(0.1)  # no relay: a warning, no crash
        board.set_led("registered", "on")
    finally:
        board.close()


def test_unknown_library_is_one_clear_error() -> None:
    with pytest.raises(GpioUnavailableError, match="unknown gpio.pin_factory 'bogus'"):
        make_pin_factory("bogus")


@needs_gpiod
def test_chip_that_cannot_be_opened_is_named(tmp_path) -> None:
    not_a_chip = tmp_path / "gpiochip9"
    not_a_chip.write_text("")
    factory = GpiodFactory(paths=[str(not_a_chip)])
    assert str(not_a_chip) in factory.chip_errors
    with pytest.raises(GpioLineError, match=r"GPIO17: cannot open .*gpiochip9"):
        factory.pin(17)


@needs_gpiod
@pytest.mark.parametrize(("spec", "name"), [
    (17, "GPIO17"), ("17", "GPIO17"), ("BCM17", "GPIO17"), ("gpio17", "GPIO17"),
    ("GPIO5", "GPIO5"), ("ID_SDA", "ID_SDA")])
def test_pin_names(spec: object, name: str) -> None:
    assert canonical(spec) == name
