"""Buttons, LEDs and the door relay through gpiozero, with the pin factory injected.

Owns turning the configured board (pins, polarity, pull-up, debounce, hold time) into gpiozero
devices, LED modes (on, off, 2 Hz blink, fast blink), relay pulses, and reporting what each
output shows. Button presses are handed to a callback (called on gpiozero's thread). Knows
nothing about SIP, calls or the event loop.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

from gpiozero import LED, Button, Device, OutputDevice
from gpiozero.exc import BadPinFactory

from .config import GpioSettings

log = logging.getLogger("intercom.gpio")
BLINK = {"blink": (0.25, 0.25), "fast": (0.1, 0.1)}  # 2 Hz, 5 Hz


def make_pin_factory(name: str) -> Any:
    """``mock``, ``lgpio``, ``rpigpio``, ``native`` or ``auto`` (GPIOZERO_PIN_FACTORY, then
    gpiozero's own choice, then a mock board when this machine has no GPIO)."""
    if name == "auto" and os.environ.get("GPIOZERO_PIN_FACTORY"):
        name = os.environ["GPIOZERO_PIN_FACTORY"]
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    if name == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    if name == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    if name == "native":
        from gpiozero.pins.native import NativeFactory

        return NativeFactory()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gpiozero's PinFactoryFallback chatter
            return Device._default_pin_factory()
    except (BadPinFactory, ImportError, OSError) as exc:
        from gpiozero.pins.mock import MockFactory

        log.warning("no GPIO hardware found (%s): buttons and LEDs are simulated", exc)
        return MockFactory()


class Board:
    def __init__(self, settings: GpioSettings, pin_factory: Any,
                 on_press: Callable[[str], None]) -> None:
        self.factory = pin_factory
        self.buttons: dict[str, Button] = {}
        self.leds: dict[str, LED] = {}
        self.modes: dict[str, str] = {}
        self.relay: OutputDevice | None = None
        self._relay_timer: threading.Timer | None = None
        self._lock = threading.Lock()
        for spec in settings.buttons:
            # ``pull_up`` means "use the internal resistor towards the idle level"
            if spec.pull_up:
                pull, active = (not spec.active_high), None
            else:
                pull, active = None, spec.active_high
            button = Button(spec.pin, pull_up=pull, active_state=active,
                            bounce_time=spec.bounce_ms / 1000 if spec.bounce_ms else None,
                            hold_time=spec.hold_s or 1.0, pin_factory=pin_factory)
            callback = _named(on_press, spec.name)
            if spec.hold_s > 0:  # must be held this long: no accidental presses
                button.when_held = callback
            else:
                button.when_pressed = callback
            self.buttons[spec.name] = button
        for led_spec in settings.leds:
            self.leds[led_spec.name] = LED(led_spec.pin, active_high=led_spec.active_high,
                                           pin_factory=pin_factory)
            self.modes[led_spec.name] = "off"
        if settings.relay is not None:
            self.relay = OutputDevice(settings.relay.pin, active_high=settings.relay.active_high,
                                      initial_value=False, pin_factory=pin_factory)
            self.modes["relay"] = "off"

    def set_led(self, name: str, mode: str) -> None:
        led = self.leds.get(name)
        if led is None or self.modes.get(name) == mode:
            return
        self.modes[name] = mode
        if mode == "on":
            led.on()
        elif mode in BLINK:
            on, off = BLINK[mode]
            led.blink(on_time=on, off_time=off, background=True)
        else:
            led.off()

    def pulse_relay(self, seconds: float) -> None:
        if self.relay is None:
            log.warning("door code accepted but no relay is configured")
            return
        with self._lock:
            if self._relay_timer is not None:
                self._relay_timer.cancel()
            self.relay.on()
            self.modes["relay"] = "on"
            self._relay_timer = threading.Timer(seconds, self._relay_off)
            self._relay_timer.daemon = True
            self._relay_timer.start()

    def _relay_off(self) -> None:
        with self._lock:
            if self.relay is not None:
                self.relay.off()
            self.modes["relay"] = "off"
            self._relay_timer = None

    def states(self) -> dict[str, str]:
        return {name: "blinking" if mode in BLINK else mode for name, mode in self.modes.items()}

    def close(self) -> None:
        if self._relay_timer is not None:
            self._relay_timer.cancel()
        self._relay_off()
        for dev in (*self.buttons.values(), *self.leds.values()):
            dev.close()
        if self.relay is not None:
            self.relay.close()


def _named(callback: Callable[[str], None], name: str) -> Callable[[], None]:
    def fire() -> None:
        callback(name)

    return fire
