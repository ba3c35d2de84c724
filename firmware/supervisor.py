"""The box's behaviour as one pure, table-driven state machine.

Owns the states a user sees (offline, idle, calling, ringing, in_call), what each button does in
each state, the LEDs and the door relay, ring timeout, maximum call duration, auto-answer, and
the door code with its lockout across calls. ``handle(event, now) -> [commands]``: no I/O, no
clock of its own (``now`` is the caller's monotonic clock), no SIP, no GPIO; the application
executes the commands and feeds back the events.

The door code is judged only when complete (its length, or a terminating ``#`` when the code has
no ``#``), compared in constant time, and never digit by digit: a caller learns nothing about a
single digit. ``door_code_max_failures`` wrong codes within ``door_code_window`` seconds, over
all calls, lock the relay for ``door_code_lockout`` seconds (error LED blinking); during the
lockout the right code does nothing.
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# ------------------------------------------------------------------------------- events in


@dataclass(frozen=True)
class Press:
    button: str


@dataclass(frozen=True)
class RegistrationUp:
    pass


@dataclass(frozen=True)
class RegistrationDown:
    reason: str


@dataclass(frozen=True)
class Incoming:
    remote: str


@dataclass(frozen=True)
class RemoteRinging:
    pass


@dataclass(frozen=True)
class Connected:
    pass


@dataclass(frozen=True)
class Ended:
    reason: str


@dataclass(frozen=True)
class Digit:
    """A DTMF key; ``source`` is how it came ("rtp" = RFC 4733, "info" = SIP INFO): a peer
    that sends each key both ways must not have it counted twice."""

    digit: str
    source: str = ""


@dataclass(frozen=True)
class Timeout:
    name: str


@dataclass(frozen=True)
class AudioFailed:
    reason: str


@dataclass(frozen=True)
class AudioRecovered:
    pass


@dataclass(frozen=True)
class UserCall:
    """``intercom call [TARGET]``: like a call button with that target."""

    target: str


@dataclass(frozen=True)
class UserAnswer:
    pass


@dataclass(frozen=True)
class UserHangup:
    pass


Event = (Press | RegistrationUp | RegistrationDown | Incoming | RemoteRinging | Connected | Ended
         | Digit | Timeout | AudioFailed | AudioRecovered | UserCall | UserAnswer | UserHangup)

# ------------------------------------------------------------------------------- commands out


@dataclass(frozen=True)
class Dial:
    target: str


@dataclass(frozen=True)
class Answer:
    pass


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Reject:
    status: int


@dataclass(frozen=True)
class Led:
    name: str
    mode: str  # "on" | "off" | "blink" (ringing/calling, 2 Hz) | "fast" (error)


@dataclass(frozen=True)
class PulseRelay:
    seconds: float


@dataclass(frozen=True)
class StartTimer:
    name: str
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class Tone:
    kind: str  # "ring" (incoming, on the box's speaker) | "ringback" | "off"


@dataclass(frozen=True)
class Log:
    level: str
    message: str


Command = (Dial | Answer | Hangup | Reject | Led | PulseRelay | StartTimer | CancelTimer | Tone
           | Log)

# ------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ButtonAction:
    """What a button does: ``call`` (with a target), ``answer``, ``hangup`` or ``talk``."""

    action: str
    target: str | None = None


@dataclass(frozen=True)
class Policy:
    buttons: dict[str, ButtonAction] = field(default_factory=dict)
    register: bool = True
    ring_timeout: float = 30.0
    max_duration: float = 0.0  # 0 = unlimited
    auto_answer: bool = False
    auto_answer_delay: float = 0.0
    door_code: str = ""
    relay_seconds: float = 3.0
    max_wrong_codes: int = 3  # per call: then the call is ended
    code_timeout: float = 5.0
    door_code_max_failures: int = 5  # over all calls within the window: then lockout
    door_code_window: float = 300.0
    door_code_lockout: float = 300.0
    ring_tone: bool = False
    ringback: bool = False


STATES = ("offline", "idle", "calling", "ringing", "in_call")
DUPLICATE_WINDOW = 1.0  # seconds within which INFO and RFC 4733 copies of a key are one key
# steady LED pattern per state (the error LED is driven separately by registration)
_STATE_LEDS = {
    "offline": {"ringing": "off", "calling": "off", "in_call": "off"},
    "idle": {"ringing": "off", "calling": "off", "in_call": "off"},
    "calling": {"ringing": "off", "calling": "blink", "in_call": "off"},
    "ringing": {"ringing": "blink", "calling": "off", "in_call": "off"},
    "in_call": {"ringing": "off", "calling": "off", "in_call": "on"},
}


class Supervisor:
    """``state`` plus the registration flag; every transition goes through ``_TABLE``."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.state = "offline" if policy.register else "idle"
        self.registered = not policy.register
        self.remote: str | None = None
        self.digits = ""
        self.wrong_codes = 0
        self.audio_ok = True
        self.failures: deque[float] = deque()  # times of wrong codes inside the window
        self.lockout_until: float | None = None
        self._recent: deque[list] = deque(maxlen=16)  # [time, source, digit, matched]
        self.now = 0.0

    def start(self) -> list[Command]:
        cmds: list[Command] = [Led(name, mode) for name, mode in _STATE_LEDS[self.state].items()]
        cmds += [Led("registered", "on" if self.registered else "off"), Led("error", "off")]
        return cmds

    def handle(self, event: Event, now: float = 0.0) -> list[Command]:
        self.now = now
        handler = _TABLE.get((self.state, type(event))) or _TABLE.get(("*", type(event)))
        if handler is None:
            return []
        before = self.state
        cmds = handler(self, event)
        if self.state != before:
            cmds = self._leave(before) + cmds + [
                Led(n, m) for n, m in _STATE_LEDS[self.state].items()]
        return cmds

    # -- transitions ------------------------------------------------------------------
    def _leave(self, state: str) -> list[Command]:
        if state == "ringing":
            return [CancelTimer("ring"), CancelTimer("auto_answer"), Tone("off")]
        if state == "calling":
            return [CancelTimer("ring"), Tone("off")]
        if state == "in_call":
            self.digits, self.wrong_codes = "", 0
            self._recent.clear()
            return [CancelTimer("max_duration"), CancelTimer("code")]
        return []

    def _idle_state(self) -> str:
        return "idle" if self.registered else "offline"

    def _press_idle(self, ev: Press) -> list[Command]:
        action = self.policy.buttons.get(ev.button)
        if action is None:
            return [Log("warning", f"button {ev.button!r} is not configured")]
        if action.action in ("call", "talk"):
            if not action.target:
                return [Log("warning", f"button {ev.button!r} has no call target")]
            return self._dial(action.target)
        return []

    def _dial(self, target: str) -> list[Command]:
        self.state, self.remote = "calling", target
        cmds: list[Command] = [Dial(target), StartTimer("ring", self.policy.ring_timeout)]
        if self.policy.ringback:
            cmds.append(Tone("ringback"))
        return cmds

    def _user_call(self, ev: UserCall) -> list[Command]:
        return self._dial(ev.target)

    def _user_answer(self, ev: UserAnswer) -> list[Command]:
        return [Answer()]

    def _user_hangup(self, ev: UserHangup) -> list[Command]:
        return [Reject(603)] if self.state == "ringing" else [Hangup()]

    def _press_calling(self, ev: Press) -> list[Command]:
        action = self.policy.buttons.get(ev.button)
        if action and action.action in ("hangup", "talk"):
            return [Hangup()]  # the call ends when SIP says so (Ended)
        return []

    def _press_ringing(self, ev: Press) -> list[Command]:
        action = self.policy.buttons.get(ev.button)
        if action is None:
            return []
        if action.action in ("answer", "talk"):
            return [Answer()]
        if action.action == "hangup":
            return [Reject(603)]
        return []

    def _press_in_call(self, ev: Press) -> list[Command]:
        action = self.policy.buttons.get(ev.button)
        if action and action.action in ("hangup", "talk"):
            return [Hangup()]
        return []

    def _incoming(self, ev: Incoming) -> list[Command]:
        if not self.audio_ok:
            return [Reject(480), Log("error", "call refused: audio device unavailable")]
        self.state, self.remote = "ringing", ev.remote
        cmds: list[Command] = [StartTimer("ring", self.policy.ring_timeout)]
        if self.policy.ring_tone:
            cmds.append(Tone("ring"))
        if self.policy.auto_answer:
            cmds.append(StartTimer("auto_answer", self.policy.auto_answer_delay))
        return cmds

    def _incoming_busy(self, ev: Incoming) -> list[Command]:
        return [Log("info", f"busy: second call from {ev.remote} refused")]

    def _connected(self, ev: Connected) -> list[Command]:
        self.state = "in_call"
        cmds: list[Command] = []
        if self.policy.max_duration > 0:
            cmds.append(StartTimer("max_duration", self.policy.max_duration))
        return cmds

    def _ended(self, ev: Ended) -> list[Command]:
        self.state, self.remote = self._idle_state(), None
        return [Log("info", f"call ended: {ev.reason}")]

    def _remote_ringing(self, ev: RemoteRinging) -> list[Command]:
        return []

    def _timeout(self, ev: Timeout) -> list[Command]:
        name = ev.name
        if name == "ring" and self.state in ("ringing", "calling"):
            return [Reject(480)] if self.state == "ringing" else [Hangup()]
        if name == "auto_answer" and self.state == "ringing":
            return [Answer()]
        if name == "max_duration" and self.state == "in_call":
            return [Log("info", "maximum call duration reached"), Hangup()]
        if name == "code":
            self.digits = ""
        if name == "door_lockout":
            self.lockout_until = None
            return [Led("error", self._error_led()),
                    Log("info", "door code lockout over: the door code works again")]
        return []

    @property
    def locked(self) -> bool:
        return self.lockout_until is not None and self.now < self.lockout_until

    def _error_led(self) -> str:
        return "off" if self.registered and self.audio_ok and not self.locked else "fast"

    def _duplicate(self, ev: Digit) -> bool:
        """The same key already arrived the other way (INFO vs RFC 4733) within a second."""
        if not ev.source:
            return False
        for entry in self._recent:
            at, source, digit, matched = entry
            if not matched and source != ev.source and digit == ev.digit and \
                    self.now - at <= DUPLICATE_WINDOW:
                entry[3] = True
                return True
        self._recent.append([self.now, ev.source, ev.digit, False])
        return False

    def _digit(self, ev: Digit) -> list[Command]:
        code = self.policy.door_code
        if not code or self._duplicate(ev):
            return []
        terminator = ev.digit == "#" and "#" not in code
        if not terminator:
            self.digits += ev.digit
        if not (len(self.digits) >= len(code) or (terminator and self.digits)):
            return [StartTimer("code", self.policy.code_timeout)] if self.digits else []
        entered, self.digits = self.digits, ""
        right = hmac.compare_digest(entered.encode(), code.encode())
        cmds: list[Command] = [CancelTimer("code")]
        if self.locked:
            return cmds + [Log("warning", "door code entered during the lockout: ignored")]
        if right:
            return cmds + [PulseRelay(self.policy.relay_seconds),
                           Log("info", "door code accepted: opening the door")]
        return cmds + self._wrong_code()

    def _wrong_code(self) -> list[Command]:
        p = self.policy
        self.wrong_codes += 1
        self.failures.append(self.now)
        while self.failures and self.now - self.failures[0] > p.door_code_window:
            self.failures.popleft()
        cmds: list[Command] = [Log("warning", f"wrong door code ({len(self.failures)} of "
                                              f"{p.door_code_max_failures} allowed in "
                                              f"{p.door_code_window:.0f} s)")]
        if len(self.failures) >= p.door_code_max_failures:
            self.failures.clear()
            self.lockout_until = self.now + p.door_code_lockout
            cmds += [Log("warning", f"door code locked for {p.door_code_lockout:.0f} s after "
                                    f"{p.door_code_max_failures} wrong codes"),
                     Led("error", "fast"), StartTimer("door_lockout", p.door_code_lockout)]
        if self.wrong_codes >= p.max_wrong_codes:
            cmds += [Log("warning", "too many wrong door codes: ending the call"), Hangup()]
        return cmds

    def _registration_up(self, ev: RegistrationUp) -> list[Command]:
        self.registered = True
        if self.state == "offline":
            self.state = "idle"
        return [Led("registered", "on"), Led("error", self._error_led())]

    def _registration_down(self, ev: RegistrationDown) -> list[Command]:
        self.registered = False
        if self.state == "idle":
            self.state = "offline"
        return [Led("registered", "off"), Led("error", "fast")]

    def _audio_recovered(self, ev: AudioRecovered) -> list[Command]:
        self.audio_ok = True
        return [Led("error", self._error_led()), Log("info", "audio devices are back")]

    def _audio_failed(self, ev: AudioFailed) -> list[Command]:
        self.audio_ok = False
        cmds: list[Command] = [Led("error", "fast"), Log("error", ev.reason)]
        if self.state in ("ringing", "in_call", "calling"):
            cmds.append(Reject(480) if self.state == "ringing" else Hangup())
        return cmds


Handler = Callable[[Supervisor, object], list[Command]]
_TABLE: dict[tuple[str, type], Handler] = {
    ("idle", Press): Supervisor._press_idle,
    ("offline", Press): Supervisor._press_idle,  # the PBX may still route the call
    ("calling", Press): Supervisor._press_calling,
    ("ringing", Press): Supervisor._press_ringing,
    ("in_call", Press): Supervisor._press_in_call,
    ("idle", Incoming): Supervisor._incoming,
    ("offline", Incoming): Supervisor._incoming,
    ("calling", Incoming): Supervisor._incoming_busy,
    ("ringing", Incoming): Supervisor._incoming_busy,
    ("in_call", Incoming): Supervisor._incoming_busy,
    ("calling", RemoteRinging): Supervisor._remote_ringing,
    ("calling", Connected): Supervisor._connected,
    ("ringing", Connected): Supervisor._connected,
    ("calling", Ended): Supervisor._ended,
    ("ringing", Ended): Supervisor._ended,
    ("in_call", Ended): Supervisor._ended,
    ("in_call", Digit): Supervisor._digit,
    ("*", Timeout): Supervisor._timeout,
    ("*", RegistrationUp): Supervisor._registration_up,
    ("*", RegistrationDown): Supervisor._registration_down,
    ("*", AudioFailed): Supervisor._audio_failed,
    ("*", AudioRecovered): Supervisor._audio_recovered,
    ("idle", UserCall): Supervisor._user_call,
    ("offline", UserCall): Supervisor._user_call,
    ("ringing", UserAnswer): Supervisor._user_answer,
    ("calling", UserHangup): Supervisor._user_hangup,
    ("ringing", UserHangup): Supervisor._user_hangup,
    ("in_call", UserHangup): Supervisor._user_hangup,
}
