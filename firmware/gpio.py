"""Buttons, LEDs and the door relay through gpiozero, with the pin factory injected.

Owns turning the configured board (pins, polarity, pull-up, debounce, hold time) into gpiozero
devices, LED modes (on, off, 2 Hz blink, fast blink, slow blink), relay pulses, and reporting
what each output shows. Button presses are handed to a callback (called on gpiozero's
thread). Knows nothing about SIP, calls or the event loop.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from gpiozero import LED, DigitalInputDevice, OutputDevice
from gpiozero.exc import BadPinFactory, GPIOZeroError

from .config import GpioSettings

log = logging.getLogger("intercom.gpio")
BLINK = {"blink": (0.25, 0.25), "fast": (0.1, 0.1), "slow": (1.0, 1.0)}  # 2 Hz, 5 Hz, 0.5 Hz


FACTORIES = ("auto", "gpiod", "mock", "rpigpio", "lgpio", "native")


class GpioUnavailableError(Exception):
    """No pin factory could be made on a machine that has GPIO; the message says why."""


def has_gpio() -> bool:
    """Whether the kernel exposes any GPIO character device."""
    return bool(glob.glob("/dev/gpiochip*"))


def make_pin_factory(name: str) -> Any:
    """``gpiod`` (the kernel's GPIO character device), ``mock``, ``rpigpio``, ``lgpio``,
    ``native``, or ``auto``: GPIOZERO_PIN_FACTORY if set, else ``gpiod`` wherever a
    ``/dev/gpiochip*`` exists, and simulated pins only on a machine without any GPIO.

    Never silently simulates pins on real hardware: a machine with GPIO whose factory cannot
    load raises GpioUnavailableError."""
    if name == "auto" and os.environ.get("GPIOZERO_PIN_FACTORY"):
        name = os.environ["GPIOZERO_PIN_FACTORY"]
    if name == "auto":
        if not has_gpio():
            log.warning("this machine has no GPIO: buttons, LEDs and the relay are simulated")
            name = "mock"
        else:
            name = "gpiod"
    try:
        if name == "mock":
            from gpiozero.pins.mock import MockFactory

            return MockFactory()
        if name == "gpiod":
            from .gpiocdev import GpiodFactory

            return GpiodFactory()
        if name == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
        if name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        if name == "native":
            from gpiozero.pins.native import NativeFactory

            return NativeFactory()
    except ImportError as exc:
        raise GpioUnavailableError(f"gpio.pin_factory {name!r}: its library is missing ({exc})") \
            from None
    except (OSError, RuntimeError, BadPinFactory) as exc:
        raise GpioUnavailableError(f"gpio.pin_factory {name!r} cannot start: {exc}") from None
    raise GpioUnavailableError(f"unknown gpio.pin_factory {name!r} (known: {', '.join(FACTORIES)})")


def factory_name(factory: Any) -> str:
    """A short name for status: gpiod, mock (simulated), rpigpio..."""
    cls = type(factory).__name__
    for short, prefix in (("gpiod", "Gpiod"), ("simulated", "Mock"), ("rpigpio", "RPiGPIO"),
                          ("lgpio", "LGPIO"), ("native", "Native")):
        if cls.startswith(prefix):
            return short
    return cls


class Board:
    """The configured buttons, LEDs and relay. A device whose line cannot be used (busy, no
    permission, no such line) is left out and named in ``errors``; the others still work."""

    def __init__(self, settings: GpioSettings, pin_factory: Any,
                 on_press: Callable[[str], None]) -> None:
        self.factory = pin_factory
        self.buttons: dict[str, DigitalInputDevice] = {}
        self.leds: dict[str, LED] = {}
        self.modes: dict[str, str] = {}
        self.relay: OutputDevice | None = None
        self.errors: list[str] = []
        self._relay_timer: threading.Timer | None = None
        self._lock = threading.Lock()
        for spec in settings.buttons:
            # ``pull_up`` means "use the internal resistor towards the idle level"
            if spec.pull_up:
                pull, active = (not spec.active_high), None
            else:
                pull, active = None, spec.active_high
            # DigitalInputDevice, not gpiozero's Button: Button's hold thread polls every 100 ms
            # for the whole life of the box (10 wake-ups/s per button, idle); a hold is timed
            # here only while the button is down
            button = self._make(f"button {spec.name!r}", spec.pin, partial(
                DigitalInputDevice, spec.pin, pull_up=pull, active_state=active,
                bounce_time=spec.bounce_ms / 1000 if spec.bounce_ms else None,
                pin_factory=pin_factory))
            if button is None:
                continue
            callback = _named(on_press, spec.name)
            if spec.hold_s > 0:  # must be held this long: no accidental presses
                hold = _Hold(button, spec.hold_s, callback)
                button.when_activated = hold.pressed
                button.when_deactivated = hold.released
            else:
                button.when_activated = callback
            self.buttons[spec.name] = button
        for led_spec in settings.leds:
            led = self._make(f"LED {led_spec.name!r}", led_spec.pin, partial(
                LED, led_spec.pin, active_high=led_spec.active_high, pin_factory=pin_factory))
            if led is not None:
                self.leds[led_spec.name] = led
                self.modes[led_spec.name] = "off"
        if settings.relay is not None:
            r = settings.relay
            self.relay = self._make("door relay", r.pin, lambda: OutputDevice(
                r.pin, active_high=r.active_high, initial_value=False, pin_factory=pin_factory))
            if self.relay is not None:
                self.modes["relay"] = "off"
        for error in self.errors:
            log.error("GPIO: %s", error)

    def _make(self, what: str, pin: int, build: Callable[[], Any]) -> Any:
        try:
            return build()
        except (GPIOZeroError, OSError, RuntimeError, ValueError) as exc:
            text = str(exc) or type(exc).__name__
            if f"GPIO{pin}" not in text:
                text = f"GPIO{pin}: {text}"
            self.errors.append(f"{what} on {text}")
            return None

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

    def report(self) -> dict[str, Any]:
        """For status: which factory drives the pins, whether they are simulated, what failed."""
        name = factory_name(self.factory) if self.factory is not None else "none"
        return {"factory": name, "simulated": name == "simulated", "errors": list(self.errors)}


class _Hold:
    """Fires ``callback`` once the button has stayed down for ``seconds``: a timer thread
    exists only while the button is down."""

    def __init__(self, button: Any, seconds: float, callback: Callable[[], None]) -> None:
        self.button, self.seconds, self.callback = button, seconds, callback
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def pressed(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.seconds, self._expired)
            self._timer.daemon = True
            self._timer.start()

    def released(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _expired(self) -> None:
        with self._lock:
            self._timer = None
        if self.button.is_active:
            self.callback()


def _named(callback: Callable[[str], None], name: str) -> Callable[[], None]:
    def fire() -> None:
        callback(name)

    return fire
