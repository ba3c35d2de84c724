"""The board on gpiozero's real MockFactory: buttons, LED modes, the relay pulse."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory

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


def wait_for(pred, timeout=2.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_default_profile_has_every_name(board_and_presses) -> None:
    board, _, _ = board_and_presses
    assert {"call", "answer", "hangup", "talk", "flat2"} <= set(board.buttons)
    assert set(board.leds) == {"registered", "ringing", "calling", "in_call", "error"}
    assert board.states()["relay"] == "off"


def test_buttons_active_low_high_and_hold(board_and_presses) -> None:
    board, factory, presses = board_and_presses
    factory.pin(24).drive_low()
    assert wait_for(lambda: presses == ["flat2"])
    factory.pin(24).drive_high()
    factory.pin(25).drive_high()  # active-high button
    assert wait_for(lambda: presses[-1:] == ["highbtn"])
    factory.pin(16).drive_low()
    time.sleep(0.1)
    factory.pin(16).drive_high()
    time.sleep(0.4)
    assert "careful" not in presses, "released before hold_s: ignored"
    factory.pin(16).drive_low()
    assert wait_for(lambda: "careful" in presses)
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
    board.set_led("unknown", "on")  # ignored


def test_relay_pulse(board_and_presses) -> None:
    board, factory, _ = board_and_presses
    pin = factory.pin(26)
    board.pulse_relay(0.3)
    assert pin.state and board.states()["relay"] == "on"
    assert wait_for(lambda: not pin.state, 1.0)
    assert board.states()["relay"] == "off"
    states = [s.state for s in pin.states]
    assert states[-2:] == [True, False]


def test_pin_factories() -> None:
    assert isinstance(make_pin_factory("mock"), MockFactory)
    assert make_pin_factory("auto") is not None  # real GPIO or a simulated board
