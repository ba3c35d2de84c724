"""A gpiozero pin factory on the kernel's GPIO character device (libgpiod v2 bindings).

Owns finding a header line by its name (``GPIO17``) on any ``/dev/gpiochip*``, with a fallback
to the same offset on the first chip that has it; requesting it as an input (bias, edge detection
and debounce done by the kernel) or an output; one thread that waits for the edges of every
watched line and hands them to gpiozero; and errors that name the pin and the reason (busy, no
permission, no such line). Works with gpiozero 1.6 (Debian trixie's) and 2.x.

This is the box's real GPIO path on Debian's kernel, which has neither ``/dev/gpiomem`` nor a
usable ``/dev/mem``. Knows nothing about buttons, LEDs, SIP or the intercom.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
import selectors
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from types import MethodType
from typing import Any
from weakref import WeakMethod, ref

import gpiod
from gpiod.line import Bias, Direction, Edge, Value
from gpiozero.exc import GPIOPinInUse, PinError, PinInvalidEdges, PinInvalidFunction, PinInvalidPull
from gpiozero.pins import Factory, Pin

log = logging.getLogger("intercom.gpio")
CONSUMER = "intercom"
_BIAS = {"up": Bias.PULL_UP, "down": Bias.PULL_DOWN, "floating": Bias.DISABLED}
_EDGES = {"both": Edge.BOTH, "rising": Edge.RISING, "falling": Edge.FALLING, "none": Edge.NONE}


class GpioLineError(PinError):
    """A line that exists (or should) but cannot be used; the message names pin and cause."""


def chip_paths() -> list[str]:
    """The GPIO character devices of this machine, in chip order."""
    paths = glob.glob("/dev/gpiochip*")
    return sorted(paths, key=lambda p: int(re.sub(r"\D", "", p) or 0))


class _LineInfo:
    """What gpiozero 2.x reads from ``pin.info`` (name, number) without its board tables."""

    def __init__(self, name: str, number: int | None) -> None:
        self.name = name
        self.number = number
        self.names = frozenset({name})
        self.pull = ""


def canonical(spec: Any) -> str:
    """``17``, ``"17"``, ``"BCM17"``, ``"GPIO17"`` -> ``"GPIO17"``; other names unchanged."""
    text = str(spec).strip()
    match = re.fullmatch(r"(?i)(?:gpio|bcm)?(\d+)", text)
    return f"GPIO{int(match.group(1))}" if match else text


class GpiodFactory(Factory):
    """Pins are found by line name across every chip; see the module docstring."""

    def __init__(self, paths: list[str] | None = None) -> None:
        super().__init__()
        self._res: dict[str, list[Any]] = defaultdict(list)
        self._chips: dict[str, gpiod.Chip] = {}
        self.chip_errors: dict[str, str] = {}
        self._names: dict[str, tuple[str, int]] = {}
        self._sizes: dict[str, int] = {}
        self._pins: dict[tuple[str, int], GpiodPin] = {}
        for path in paths if paths is not None else chip_paths():
            try:
                chip = gpiod.Chip(path)
                info = chip.get_info()
            except OSError as exc:
                self.chip_errors[path] = _why(exc)
                continue
            self._chips[path] = chip
            self._sizes[path] = info.num_lines
            for offset in range(info.num_lines):
                name = chip.get_line_info(offset).name
                if name and name not in self._names:
                    self._names[name] = (path, offset)
        self._watcher: _EdgeWatcher | None = None
        self._lock = threading.Lock()

    # gpiozero API ----------------------------------------------------------------------
    def pin(self, spec: Any) -> GpiodPin:
        path, offset, name = self._locate(spec)
        with self._lock:
            pin = self._pins.get((path, offset))
            if pin is None or pin.closed:
                pin = GpiodPin(self, self._chips[path], path, offset, name)
                self._pins[(path, offset)] = pin
            return pin

    def reserve_pins(self, requester: Any, *specs: Any) -> None:
        with self._res_lock:
            for key in map(canonical, specs):
                for other in self._res[key]:
                    holder = other()
                    if holder is not None and requester._conflicts_with(holder):
                        raise GPIOPinInUse(f"pin {key} is already in use by {holder!r}")
                self._res[key].append(ref(requester))

    def release_pins(self, reserver: Any, *specs: Any) -> None:
        with self._res_lock:
            for key in map(canonical, specs):
                self._res[key] = [r for r in self._res[key] if r() not in (reserver, None)]

    def release_all(self, reserver: Any) -> None:
        self.release_pins(reserver, *list(self._res))

    def ticks(self) -> int:
        return time.monotonic_ns()  # the clock the kernel stamps edge events with

    def ticks_diff(self, later: int, earlier: int) -> float:
        return (later - earlier) / 1e9

    def close(self) -> None:
        for pin in list(self._pins.values()):
            pin.close()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        for chip in self._chips.values():
            chip.close()
        self._chips.clear()

    # ours ------------------------------------------------------------------------------
    def describe(self) -> str:
        chips = ", ".join(f"{os.path.basename(p)} ({n} lines)" for p, n in self._sizes.items())
        return chips or "no usable GPIO chip"

    def _locate(self, spec: Any) -> tuple[str, int, str]:
        text = str(spec).strip()
        explicit = re.fullmatch(r"(/dev/)?(gpiochip\d+):(\d+)", text)
        if explicit:
            path, offset = "/dev/" + explicit.group(2), int(explicit.group(3))
            self._check_chip(path, text)
            if offset >= self._sizes[path]:
                raise GpioLineError(f"{text}: {path} has only {self._sizes[path]} lines")
            return path, offset, text
        name = canonical(text)
        if name in self._names:
            path, offset = self._names[name]
            return path, offset, name
        number = re.fullmatch(r"GPIO(\d+)", name)
        if number:  # chips without line names: the same offset on the first chip that has it
            wanted = int(number.group(1))
            for path, size in self._sizes.items():
                if wanted < size:
                    log.info("%s: no line of that name; using %s line %d", name, path, wanted)
                    return path, wanted, name
        if self.chip_errors:
            path, why = next(iter(self.chip_errors.items()))
            raise GpioLineError(f"{name}: cannot open {path}: {why}")
        raise GpioLineError(f"{name}: no GPIO line of that name ({self.describe()})")

    def _check_chip(self, path: str, what: str) -> None:
        if path in self.chip_errors:
            raise GpioLineError(f"{what}: cannot open {path}: {self.chip_errors[path]}")
        if path not in self._chips:
            raise GpioLineError(f"{what}: no such GPIO chip {path}")

    def _watch(self, pin: GpiodPin, on: bool) -> None:
        with self._lock:
            if self._watcher is None:
                if not on:
                    return
                self._watcher = _EdgeWatcher()
            self._watcher.change(pin, on)


class GpiodPin(Pin):
    """One requested line. States are physical levels (gpiozero applies active-low)."""

    def __init__(self, factory: GpiodFactory, chip: gpiod.Chip, path: str, offset: int,
                 name: str) -> None:
        super().__init__()
        self._factory = factory
        self._chip = chip
        self._path = path
        self._offset = offset
        self._name = name
        number = re.fullmatch(r"GPIO(\d+)", name)
        self._info = _LineInfo(name, int(number.group(1)) if number else offset)
        self._function = "input"
        self._pull = "floating"
        self._bounce: float | None = None
        self._edges = "both"
        self._out = False
        self._when_changed: Callable[[], Any] | None = None
        self._lock = threading.RLock()
        self.closed = False
        self._req = self._request(gpiod.LineSettings(direction=Direction.INPUT))

    def __repr__(self) -> str:
        return f"{self._name} ({os.path.basename(self._path)} line {self._offset})"

    # gpiozero 1.6 reads pin.number, 2.x pin.info
    @property
    def number(self) -> int | None:
        return self._info.number

    @property
    def info(self) -> _LineInfo:
        return self._info

    def _get_info(self) -> _LineInfo:
        return self._info

    def _request(self, settings: gpiod.LineSettings) -> Any:
        try:
            return self._chip.request_lines(config={self._offset: settings}, consumer=CONSUMER)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                holder = ""
                try:
                    holder = self._chip.get_line_info(self._offset).consumer or ""
                except OSError:
                    pass
                by = f" by {holder!r}" if holder else ""
                raise GpioLineError(f"{self!r} is busy: already requested{by}") from None
            raise GpioLineError(f"{self!r}: {_why(exc)}") from None

    def _apply(self) -> None:
        if self._function == "output":
            settings = gpiod.LineSettings(
                direction=Direction.OUTPUT, output_value=Value.ACTIVE if self._out else
                Value.INACTIVE)
        else:
            watching = self._when_changed is not None
            settings = gpiod.LineSettings(
                direction=Direction.INPUT, bias=_BIAS[self._pull],
                edge_detection=_EDGES[self._edges] if watching else Edge.NONE,
                debounce_period=timedelta(seconds=self._bounce or 0))
        try:
            self._req.reconfigure_lines({self._offset: settings})
        except OSError as exc:
            raise GpioLineError(f"{self!r}: cannot configure: {_why(exc)}") from None

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._when_changed is not None:
                self._when_changed = None
                self._factory._watch(self, False)
            self._req.release()

    def output_with_state(self, state: Any) -> None:
        with self._lock:
            self._function, self._out = "output", bool(state)
            self._apply()

    def input_with_pull(self, pull: str) -> None:
        with self._lock:
            if pull not in _BIAS:
                raise PinInvalidPull(f"invalid pull {pull!r} for {self!r}")
            self._function, self._pull = "input", pull
            self._apply()

    def _get_function(self) -> str:
        return self._function

    def _set_function(self, value: str) -> None:
        if value not in ("input", "output"):
            raise PinInvalidFunction(f"invalid function {value!r} for {self!r}")
        with self._lock:
            if value != self._function:
                self._function = value
                self._apply()

    def _get_state(self) -> int:
        with self._lock:
            if self._function == "output":
                return int(self._out)
            try:
                return int(self._req.get_value(self._offset) == Value.ACTIVE)
            except OSError as exc:
                raise GpioLineError(f"{self!r}: cannot read: {_why(exc)}") from None

    def _set_state(self, value: Any) -> None:
        with self._lock:
            if self._function != "output":
                from gpiozero.exc import PinSetInput

                raise PinSetInput(f"cannot set the state of input {self!r}")
            self._out = bool(value)
            try:
                self._req.set_value(self._offset, Value.ACTIVE if self._out else Value.INACTIVE)
            except OSError as exc:
                raise GpioLineError(f"{self!r}: cannot write: {_why(exc)}") from None

    def _get_pull(self) -> str:
        return self._pull

    def _set_pull(self, value: str) -> None:
        if value not in _BIAS:
            raise PinInvalidPull(f"invalid pull {value!r} for {self!r}")
        with self._lock:
            self._pull = value
            if self._function == "input":
                self._apply()

    def _get_bounce(self) -> float | None:
        return self._bounce

    def _set_bounce(self, value: float | None) -> None:
        with self._lock:
            self._bounce = value if value else None
            if self._function == "input":
                self._apply()

    def _get_edges(self) -> str:
        return self._edges

    def _set_edges(self, value: str) -> None:
        if value not in _EDGES:
            raise PinInvalidEdges(f"invalid edges {value!r} for {self!r}")
        with self._lock:
            self._edges = value
            if self._function == "input":
                self._apply()

    def _get_when_changed(self) -> Callable[..., Any] | None:
        target = self._when_changed() if self._when_changed is not None else None
        return target

    def _set_when_changed(self, value: Callable[..., Any] | None) -> None:
        with self._lock:
            was = self._when_changed is not None
            if value is None:
                self._when_changed = None
            elif isinstance(value, MethodType):  # no strong reference to the device
                self._when_changed = WeakMethod(value)
            else:
                self._when_changed = lambda: value
            if (self._when_changed is not None) != was:
                if self._function == "input":
                    self._apply()
                self._factory._watch(self, self._when_changed is not None)

    # called on the edge thread
    def fileno(self) -> int:
        return self._req.fd

    def _edges_ready(self) -> None:
        try:
            events = self._req.read_edge_events()
        except OSError as exc:
            log.warning("%r: cannot read edge events: %s", self, _why(exc))
            return
        target = self._get_when_changed()
        if target is None:
            return
        for event in events:
            state = 1 if event.event_type == event.Type.RISING_EDGE else 0
            target(event.timestamp_ns, state)


class _EdgeWatcher:
    """One thread waiting on every watched line's request fd; changes arrive through a pipe."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending: list[tuple[GpiodPin, bool, threading.Event]] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="gpio-edges", daemon=True)
        self._thread.start()

    def change(self, pin: GpiodPin, on: bool) -> None:
        done = threading.Event()
        with self._lock:
            self._pending.append((pin, on, done))
        os.write(self._wake_w, b"x")
        if threading.current_thread() is not self._thread:
            done.wait(2.0)  # the fd must be unregistered before the request is released

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(2.0)
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for pin, on, done in pending:
            try:
                if on:
                    self._sel.register(pin.fileno(), selectors.EVENT_READ, pin)
                else:
                    self._sel.unregister(pin.fileno())
            except (KeyError, ValueError, OSError):
                pass
            done.set()

    def _run(self) -> None:
        while not self._stopping:
            for key, _ in self._sel.select():
                if key.data is None:
                    try:
                        os.read(self._wake_r, 512)
                    except BlockingIOError:
                        pass
                    self._apply_pending()
                else:
                    try:
                        key.data._edges_ready()
                    except Exception:  # a callback's bug must not stop every button
                        log.exception("GPIO edge callback failed")
        self._apply_pending()


def _why(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (the service user must be in the gpio group)"
    return exc.strerror or str(exc)

