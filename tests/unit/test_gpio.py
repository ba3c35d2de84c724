"""The board on gpiozero's real MockFactory: buttons, LED modes, the relay pulse."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory

from devtools.waiting import wait_for
from firmware.config import parse_config
from firmware.gpio import Board, make_pin_factory

BASE = "sip:\n  server: pbx\n  username: '5002'\n"


@pytest.fixture
def board_and_presses():
    cfg = parse_config(BASE + """gpio:
  pin_factory: mock
  buttons:
    flat2: {pin: 24, target: "5003"}
    highbtn: {pin: 25, action: answer, active_high: true}
    careful: {pin: 16, action: hangup, hold_s: 0.3}
  relay: {seconds: 0.3}
""")
    factory = MockFactory()
    presses: list[str] = []
    board = Board(cfg.gpio, factory, presses.append)
    yield board, factory, presses
    board.close()


def test_default_profile_has_every_name(board_and_presses) -> None:
    board, _, _ = board_and_presses
    assert {"call", "answer", "hangup", "talk", "flat2"} <= set(board.buttons)
    assert set(board.leds) == {"registered", "ringing", "calling", "in_call", "error"}
    assert board.states()["relay"] == "off"


def test_buttons_active_low_high_and_hold(board_and_presses) -> None:
    board, factory, presses = board_and_presses
    factory.pin(24).drive_low()
    wait_for(lambda: presses == ["flat2"], 2.0, 0.01, "the press")
    factory.pin(24).drive_high()
    factory.pin(25).drive_high()  # active-high button
    wait_for(lambda: presses[-1:] == ["highbtn"], 2.0, 0.01, "the press")
    factory.pin(16).drive_low()
    time.sleep(0.1)
    factory.pin(16).drive_high()
    time.sleep(0.4)
    assert "careful" not in presses, "released before hold_s: ignored"
    factory.pin(16).drive_low()
    wait_for(lambda: "careful" in presses, 2.0, 0.01, "the press")
    factory.pin(16).drive_high()


def test_led_modes_show_on_the_pins(board_and_presses) -> None:
    board, factory, _ = board_and_presses
    pin = factory.pin(6)  # ringing LED
    board.set_led("ringing", "blink")
    time.sleep(1.05)
    toggles = [s.state for s in pin.states]
    assert toggles.count(True) >= 2 and toggles.count(False) >= 2, "blinks at 2 Hz"
    assert board.states()["ringing"] == "blinking"
    board.set_led("ringing", "on")
    assert pin.state is True or pin.state == 1
    board.set_led("ringing", "off")
    assert not pin.state
    before = board.states()
    pins_before = {n: factory.pin(n).state for n in (5, 6, 12, 13, 19, 26)}
    board.set_led("unknown", "on")  # a name the board does not have: ignored, nothing driven
    assert board.states() == before and "unknown" not in board.states()
    assert {n: factory.pin(n).state for n in (5, 6, 12, 13, 19, 26)} == pins_before


def test_relay_pulse(board_and_presses) -> None:
    board, factory, _ = board_and_presses
    pin = factory.pin(26)
    board.pulse_relay(0.3)
    assert pin.state and board.states()["relay"] == "on"
    wait_for(lambda: not pin.state, 1.0, 0.01, "the LED off")
    assert board.states()["relay"] == "off"
    states = [s.state for s in pin.states]
    assert states[-2:] == [True, False]


def test_mock_pin_factory_is_a_fresh_working_board() -> None:
    """``mock`` gives each caller its own simulated header: a board built on it sees presses
    and drives LEDs, and a second factory's pins are untouched by the first."""
    cfg = parse_config(BASE + "gpio:\n  pin_factory: mock\n")
    first, second = make_pin_factory("mock"), make_pin_factory("mock")
    assert isinstance(first, MockFactory) and isinstance(second, MockFactory)
    assert first is not second
    presses: list[str] = []
    board = Board(cfg.gpio, first, presses.append)
    try:
        first.pin(17).drive_low()  # the default profile's call button
        wait_for(lambda: presses == ["call"], 2.0, 0.01, "the press")
        board.set_led("in_call", "on")
        assert first.pin(19).state
        assert first.pin(17).pull == "up", "button idles high through the internal pull-up"
        assert not second.pin(19).state and second.pin(17).pull == "floating", \
            "the second factory's header is untouched"
    finally:
        board.close()
