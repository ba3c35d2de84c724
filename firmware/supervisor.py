"""The box's behaviour as one pure state machine whose transitions are a table of data.

Owns the states a user sees (offline, idle, calling, ringing, in_call), the transition table
``TRANSITIONS`` (state, event, guard) -> (next state, action), the button table ``BUTTONS``
(state, button action) -> what the press means, the LEDs and the door relay, ring timeout,
maximum call duration, auto-answer, and the door code with its lockout across calls.

``Supervisor.handle(event, now) -> [commands]``: no I/O, no clock of its own (``now`` is the
caller's monotonic clock, used by the door-code window and lockout), no SIP, no GPIO; the
application executes the commands and feeds back the events. Only ``handle`` changes the state,
and only to the table's next state: an action computes commands, never the state. The state
diagram in README.md is drawn from these tables (``python -m firmware.supervisor --diagram``).

A press whose (state, action) has no ``BUTTONS`` entry does nothing. A user's request
(``intercom call|answer|hangup``) that the current state has no row for yields a ``Refused``
command with the reason, so the control socket can answer it without repeating these rules.

The door code is judged only when complete (its length, or a terminating ``#`` when the code has
no ``#``), compared in constant time, and never digit by digit: a caller learns nothing about a
single digit. ``door_code_max_failures`` wrong codes within ``door_code_window`` seconds, over
all calls, lock the relay for ``door_code_lockout`` seconds (error LED blinking); during the
lockout the right code does nothing. The lockout outlives the process: ``lockout_state()``
hands the application the failure times and the lockout's end (on the caller's monotonic
clock) to keep, and ``start(now, lockout)`` takes them back after a restart.

With the audio devices missing a call button refuses the press (no half-call that reception
picks up to silence): a ``Refused`` marked as a fault, the error LED blinking.
"""

from __future__ import annotations

import hmac
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from .config import Action  # the button actions a configuration may name


class State(StrEnum):
    OFFLINE = "offline"
    IDLE = "idle"
    CALLING = "calling"
    RINGING = "ringing"
    IN_CALL = "in_call"


class EventKind(StrEnum):
    PRESS = "Press"
    REGISTRATION_UP = "RegistrationUp"
    REGISTRATION_DOWN = "RegistrationDown"
    INCOMING = "Incoming"
    REMOTE_RINGING = "RemoteRinging"
    CONNECTED = "Connected"
    ENDED = "Ended"
    DIGIT = "Digit"
    TIMEOUT = "Timeout"
    AUDIO_FAILED = "AudioFailed"
    AUDIO_RECOVERED = "AudioRecovered"
    USER_CALL = "UserCall"
    USER_ANSWER = "UserAnswer"
    USER_HANGUP = "UserHangup"
    UPDATE_ALERT = "UpdateAlert"


# ------------------------------------------------------------------------------- events in


@dataclass(frozen=True)
class Press:
    kind: ClassVar[EventKind] = EventKind.PRESS
    button: str


@dataclass(frozen=True)
class RegistrationUp:
    kind: ClassVar[EventKind] = EventKind.REGISTRATION_UP


@dataclass(frozen=True)
class RegistrationDown:
    kind: ClassVar[EventKind] = EventKind.REGISTRATION_DOWN
    reason: str


@dataclass(frozen=True)
class Incoming:
    kind: ClassVar[EventKind] = EventKind.INCOMING
    remote: str


@dataclass(frozen=True)
class RemoteRinging:
    kind: ClassVar[EventKind] = EventKind.REMOTE_RINGING


@dataclass(frozen=True)
class Connected:
    kind: ClassVar[EventKind] = EventKind.CONNECTED


@dataclass(frozen=True)
class Ended:
    kind: ClassVar[EventKind] = EventKind.ENDED
    reason: str


@dataclass(frozen=True)
class Digit:
    """A DTMF key; ``source`` is how it came ("rtp" = RFC 4733, "info" = SIP INFO): a peer
    that sends each key both ways must not have it counted twice. repr() never shows the key
    (it may be part of the door code, and events are logged at debug level)."""

    kind: ClassVar[EventKind] = EventKind.DIGIT
    digit: str = field(repr=False)
    source: str = ""


@dataclass(frozen=True)
class Timeout:
    kind: ClassVar[EventKind] = EventKind.TIMEOUT
    name: str


@dataclass(frozen=True)
class AudioFailed:
    kind: ClassVar[EventKind] = EventKind.AUDIO_FAILED
    reason: str


@dataclass(frozen=True)
class AudioRecovered:
    kind: ClassVar[EventKind] = EventKind.AUDIO_RECOVERED


@dataclass(frozen=True)
class UpdateAlert:
    """The last update was rolled back and nobody acknowledged it yet (``reason`` says why);
    None: no such alert (any more). The error LED blinks slowly while nothing worse is wrong."""

    kind: ClassVar[EventKind] = EventKind.UPDATE_ALERT
    reason: str | None


@dataclass(frozen=True)
class UserCall:
    """A call button or ``intercom call [TARGET]``."""

    kind: ClassVar[EventKind] = EventKind.USER_CALL
    target: str


@dataclass(frozen=True)
class UserAnswer:
    kind: ClassVar[EventKind] = EventKind.USER_ANSWER


@dataclass(frozen=True)
class UserHangup:
    kind: ClassVar[EventKind] = EventKind.USER_HANGUP


Event = (Press | RegistrationUp | RegistrationDown | Incoming | RemoteRinging | Connected | Ended
         | Digit | Timeout | AudioFailed | AudioRecovered | UserCall | UserAnswer | UserHangup
         | UpdateAlert)

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
    # | "slow" (error LED, 0.5 Hz: an update was rolled back)


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


@dataclass(frozen=True)
class Refused:
    """A user's request the current state has no transition for; ``reason`` says why.
    ``fault``: refused because something is broken (the installer must act: status
    ``last_error``), not merely because of the state."""

    reason: str
    fault: bool = False


@dataclass(frozen=True)
class LockoutState:
    """The door-code memory that must outlive a restart: the times of the wrong codes still
    inside the window and when the lockout ends (None: not locked), on the monotonic clock."""

    failures: tuple[float, ...] = ()
    lockout_until: float | None = None


Command = (Dial | Answer | Hangup | Reject | Led | PulseRelay | StartTimer | CancelTimer | Tone
           | Log | Refused)

# ------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ButtonAction:
    """What a button does: ``call`` (with a target), ``answer``, ``hangup`` or ``talk``."""

    action: Action
    target: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", Action(self.action))  # "call" -> Action.CALL


@dataclass(frozen=True)
class Policy:
    """The supervisor's settings; the application builds it from the configuration (whose
    dataclasses hold the defaults a user sees)."""

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


# ------------------------------------------------------------------------------- the tables


@dataclass(frozen=True)
class Row:
    """One transition: in ``state``, on ``event`` (when ``guard`` holds), run ``action`` (a
    Supervisor method returning commands) and go to ``next`` (None = stay)."""

    state: State
    event: EventKind
    next: State | None
    action: str | None = None
    guard: str | None = None


S, E = State, EventKind
_ALL = tuple(State)
_CALL = (S.CALLING, S.RINGING, S.IN_CALL)
_REST = (S.OFFLINE, S.IDLE)


def _rows(states: tuple[State, ...], event: EventKind, next_: State | None,
          action: str | None = None, guard: str | None = None) -> list[Row]:
    return [Row(s, event, next_, action, guard) for s in states]


TRANSITIONS: tuple[Row, ...] = tuple([
    # offline: the PBX may still route it; without audio no half-call (refused, error LED)
    *_rows(_REST, E.USER_CALL, S.CALLING, "_dial", guard="audio ok"),
    *_rows(_REST, E.USER_CALL, None, "_refuse_call_no_audio", guard="audio failed"),
    *_rows(_REST, E.INCOMING, S.RINGING, "_ring", guard="audio ok"),
    *_rows(_REST, E.INCOMING, None, "_refuse_no_audio", guard="audio failed"),
    *_rows(_CALL, E.INCOMING, None, "_busy"),
    Row(S.CALLING, E.REMOTE_RINGING, None),
    Row(S.CALLING, E.CONNECTED, S.IN_CALL, "_connected"),
    Row(S.RINGING, E.CONNECTED, S.IN_CALL, "_connected"),
    *_rows(_CALL, E.ENDED, S.IDLE, "_ended", guard="registered"),
    *_rows(_CALL, E.ENDED, S.OFFLINE, "_ended", guard="not registered"),
    Row(S.IN_CALL, E.DIGIT, None, "_digit"),
    Row(S.RINGING, E.USER_ANSWER, None, "_answer"),
    Row(S.CALLING, E.USER_HANGUP, None, "_hangup"),
    Row(S.RINGING, E.USER_HANGUP, None, "_reject"),
    Row(S.IN_CALL, E.USER_HANGUP, None, "_hangup"),
    *_rows(_ALL, E.TIMEOUT, None, "_timeout"),
    Row(S.OFFLINE, E.REGISTRATION_UP, S.IDLE, "_registration_up"),
    *_rows((S.IDLE, *_CALL), E.REGISTRATION_UP, None, "_registration_up"),
    Row(S.IDLE, E.REGISTRATION_DOWN, S.OFFLINE, "_registration_down"),
    *_rows((S.OFFLINE, *_CALL), E.REGISTRATION_DOWN, None, "_registration_down"),
    *_rows(_ALL, E.AUDIO_FAILED, None, "_audio_failed"),
    *_rows(_ALL, E.AUDIO_RECOVERED, None, "_audio_recovered"),
    *_rows(_ALL, E.UPDATE_ALERT, None, "_update_alert"),
])

# (state, button action) -> the user request the press stands for; no row: the press does nothing
BUTTONS: dict[tuple[State, Action], EventKind] = {
    (S.OFFLINE, Action.CALL): E.USER_CALL, (S.OFFLINE, Action.TALK): E.USER_CALL,
    (S.IDLE, Action.CALL): E.USER_CALL, (S.IDLE, Action.TALK): E.USER_CALL,
    (S.CALLING, Action.HANGUP): E.USER_HANGUP, (S.CALLING, Action.TALK): E.USER_HANGUP,
    (S.RINGING, Action.ANSWER): E.USER_ANSWER, (S.RINGING, Action.TALK): E.USER_ANSWER,
    (S.RINGING, Action.HANGUP): E.USER_HANGUP,
    (S.IN_CALL, Action.HANGUP): E.USER_HANGUP, (S.IN_CALL, Action.TALK): E.USER_HANGUP,
}

# why a user's request is refused when the state has no row for it
_REFUSALS = {E.USER_CALL: "cannot call while {state}",
             E.USER_ANSWER: "nothing to answer (state {state})",
             E.USER_HANGUP: "no call to hang up (state {state})"}


# commands run when leaving a state (its timers and tones end with it)
ON_EXIT: dict[State, tuple[Command, ...]] = {
    S.RINGING: (CancelTimer("ring"), CancelTimer("auto_answer"), Tone("off")),
    S.CALLING: (CancelTimer("ring"), Tone("off")),
    S.IN_CALL: (CancelTimer("max_duration"), CancelTimer("code")),
}

# steady LED pattern per state (the error and registered LEDs follow registration and faults)
STATE_LEDS: dict[State, dict[str, str]] = {
    S.OFFLINE: {"ringing": "off", "calling": "off", "in_call": "off"},
    S.IDLE: {"ringing": "off", "calling": "off", "in_call": "off"},
    S.CALLING: {"ringing": "off", "calling": "blink", "in_call": "off"},
    S.RINGING: {"ringing": "blink", "calling": "off", "in_call": "off"},
    S.IN_CALL: {"ringing": "off", "calling": "off", "in_call": "on"},
}
STATES = tuple(s.value for s in State)
DUPLICATE_WINDOW = 1.0  # seconds within which INFO and RFC 4733 copies of a key are one key


def _index(rows: tuple[Row, ...]) -> dict[tuple[State, EventKind], tuple[Row, ...]]:
    index: dict[tuple[State, EventKind], tuple[Row, ...]] = {}
    for row in rows:
        index[(row.state, row.event)] = (*index.get((row.state, row.event), ()), row)
    return index


_INDEX = _index(TRANSITIONS)


class Supervisor:
    """``state`` plus the registration, audio and door-code memory; transitions only by
    ``TRANSITIONS``."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.state = State.OFFLINE if policy.register else State.IDLE
        self.registered = not policy.register
        self.remote: str | None = None
        self.digits = ""
        self.wrong_codes = 0
        self.audio_ok = True
        self.audio_reason = ""
        self.update_alert: str | None = None  # a rolled-back update nobody acknowledged
        self.failures: deque[float] = deque()  # times of wrong codes inside the window
        self.lockout_until: float | None = None
        self._recent: deque[list] = deque(maxlen=16)  # [time, source, digit, matched]
        self.now = 0.0

    def start(self, now: float = 0.0, lockout: LockoutState | None = None) -> list[Command]:
        """The LEDs of the first state; ``lockout``: the door-code memory kept by the previous
        process (``lockout_state()``), taken back so a restart does not reset the count."""
        self.now = now
        cmds: list[Command] = [Led(name, mode) for name, mode in STATE_LEDS[self.state].items()]
        cmds += [Led("registered", "on" if self.registered else "off"), Led("error", "off")]
        if lockout is not None:
            cmds += self._restore(lockout)
        return cmds

    def lockout_state(self) -> LockoutState:
        """What ``start`` needs to carry the door-code lockout over a restart."""
        return LockoutState(tuple(self.failures),
                            self.lockout_until if self.locked else None)

    def _restore(self, kept: LockoutState) -> list[Command]:
        p, now = self.policy, self.now
        # times from the future or beyond the window are not believed: clamp, never extend
        self.failures = deque(sorted(min(t, now) for t in kept.failures
                                     if now - t <= p.door_code_window)[-p.door_code_max_failures:])
        until = kept.lockout_until
        if until is None or until <= now:
            return []
        self.lockout_until = min(until, now + p.door_code_lockout)
        left = self.lockout_until - now
        return [Led("error", "fast"), StartTimer("door_lockout", left),
                Log("warning", f"door code still locked for {left:.0f} s (kept over a restart)")]

    def handle(self, event: Event, now: float = 0.0) -> list[Command]:
        """Feed one event at the caller's monotonic time ``now``; returns the commands."""
        self.now = now
        if isinstance(event, Press):
            request = self._button(event)
            if isinstance(request, list):
                return request
            event = request
        row = next((r for r in _INDEX.get((self.state, event.kind), ())
                    if r.guard is None or _GUARDS[r.guard](self)), None)
        if row is None:
            refusal = _REFUSALS.get(event.kind)
            return [Refused(refusal.format(state=self.state))] if refusal else []
        cmds: list[Command] = getattr(self, row.action)(event) if row.action else []
        if row.next is not None and row.next != self.state:
            before, self.state = self.state, row.next
            cmds = self._leave(before) + cmds + [
                Led(n, m) for n, m in STATE_LEDS[self.state].items()]
        return cmds

    def _button(self, ev: Press) -> UserCall | UserAnswer | UserHangup | list[Command]:
        """The user request a press stands for in this state (BUTTONS), or what to do instead."""
        spec = self.policy.buttons.get(ev.button)
        if spec is None:
            return [Log("warning", f"button {ev.button!r} is not configured")]
        kind = BUTTONS.get((self.state, spec.action))
        if kind is EventKind.USER_CALL:
            if not spec.target:
                return [Log("warning", f"button {ev.button!r} has no call target")]
            return UserCall(spec.target)
        if kind is EventKind.USER_ANSWER:
            return UserAnswer()
        if kind is EventKind.USER_HANGUP:
            return UserHangup()
        return []

    # -- actions: commands only; the table sets the state ------------------------------
    def _leave(self, state: State) -> list[Command]:
        if state is State.IN_CALL:
            self.digits, self.wrong_codes = "", 0
            self._recent.clear()
        return list(ON_EXIT.get(state, ()))

    def _dial(self, ev: UserCall) -> list[Command]:
        self.remote = ev.target
        cmds: list[Command] = [Dial(ev.target), StartTimer("ring", self.policy.ring_timeout)]
        if self.policy.ringback:
            cmds.append(Tone("ringback"))
        return cmds

    def _answer(self, ev: UserAnswer) -> list[Command]:
        return [Answer()]

    def _hangup(self, ev: UserHangup) -> list[Command]:
        return [Hangup()]  # the call ends when SIP says so (Ended)

    def _reject(self, ev: UserHangup) -> list[Command]:
        return [Reject(603)]

    def _ring(self, ev: Incoming) -> list[Command]:
        self.remote = ev.remote
        cmds: list[Command] = [StartTimer("ring", self.policy.ring_timeout)]
        if self.policy.ring_tone:
            cmds.append(Tone("ring"))
        if self.policy.auto_answer:
            cmds.append(StartTimer("auto_answer", self.policy.auto_answer_delay))
        return cmds

    def _refuse_call_no_audio(self, ev: UserCall) -> list[Command]:
        why = f"call refused: audio device unavailable ({self.audio_reason})"
        return [Refused(why, fault=True), Led("error", "fast"), Log("warning", why)]

    def _refuse_no_audio(self, ev: Incoming) -> list[Command]:
        return [Reject(480), Log("error", "call refused: audio device unavailable")]

    def _busy(self, ev: Incoming) -> list[Command]:
        return [Log("info", f"busy: second call from {ev.remote} refused")]

    def _connected(self, ev: Connected) -> list[Command]:
        if self.policy.max_duration > 0:
            return [StartTimer("max_duration", self.policy.max_duration)]
        return []

    def _ended(self, ev: Ended) -> list[Command]:
        self.remote = None
        return [Log("info", f"call ended: {ev.reason}")]

    def _timeout(self, ev: Timeout) -> list[Command]:
        name = ev.name
        if name == "ring" and self.state in (State.RINGING, State.CALLING):
            return [Reject(480)] if self.state is State.RINGING else [Hangup()]
        if name == "auto_answer" and self.state is State.RINGING:
            return [Answer()]
        if name == "max_duration" and self.state is State.IN_CALL:
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
        if not (self.registered and self.audio_ok and not self.locked):
            return "fast"
        return "slow" if self.update_alert else "off"

    def _update_alert(self, ev: UpdateAlert) -> list[Command]:
        self.update_alert = ev.reason
        cmds: list[Command] = [Log("warning", f"update rolled back: {ev.reason} (the error LED "
                                              "blinks slowly until `intercom update --ack`)")
                               if ev.reason else Log("info", "update alert cleared")]
        if self._error_led() != "fast":  # a fault's fast blink wins; its end shows the alert
            cmds.append(Led("error", self._error_led()))
        return cmds

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
        return [Led("registered", "on"), Led("error", self._error_led())]

    def _registration_down(self, ev: RegistrationDown) -> list[Command]:
        self.registered = False
        return [Led("registered", "off"), Led("error", "fast")]

    def _audio_recovered(self, ev: AudioRecovered) -> list[Command]:
        self.audio_ok = True
        return [Led("error", self._error_led()), Log("info", "audio devices are back")]

    def _audio_failed(self, ev: AudioFailed) -> list[Command]:
        self.audio_ok = False
        self.audio_reason = ev.reason
        cmds: list[Command] = [Led("error", "fast"), Log("error", ev.reason)]
        if self.state in _CALL:
            cmds.append(Reject(480) if self.state is State.RINGING else Hangup())
        return cmds


_GUARDS: dict[str, Callable[[Supervisor], bool]] = {
    "audio ok": lambda s: s.audio_ok, "audio failed": lambda s: not s.audio_ok,
    "registered": lambda s: s.registered, "not registered": lambda s: not s.registered,
}


# ------------------------------------------------------------------------------- the diagram
README_BEGIN = "<!-- state-diagram: generated by `python -m firmware.supervisor --readme` -->"
README_END = "<!-- /state-diagram -->"


def _label(row: Row) -> str:
    text = row.event.value
    if row.event in (E.USER_CALL, E.USER_ANSWER, E.USER_HANGUP):
        actions = [a.value for a in Action if BUTTONS.get((row.state, a)) is row.event]
        if actions:
            text += f" (button {', '.join(actions)})"
    return text + (f" [{row.guard}]" if row.guard else "")


def diagram() -> str:
    """The state diagram as Mermaid, drawn from TRANSITIONS: every state change; events that
    keep the state are listed under it."""
    lines = ["stateDiagram-v2",
             f"    [*] --> {S.OFFLINE.value}: start [sip.register]",
             f"    [*] --> {S.IDLE.value}: start [no registration]"]
    stays: dict[State, list[str]] = {s: [] for s in State}
    for row in TRANSITIONS:
        if row.next is None or row.next == row.state:
            label = _label(row)
            if label not in stays[row.state]:
                stays[row.state].append(label)
        else:
            lines.append(f"    {row.state.value} --> {row.next.value}: {_label(row)}")
    for state, labels in stays.items():
        lines.append(f"    note right of {state.value}: stays on {', '.join(labels)}")
    return "\n".join(lines) + "\n"


def readme_section() -> str:
    """The README section (between its marker comments) with the diagram and button table."""
    buttons = ["| state | " + " | ".join(a.value for a in Action) + " |",
               "|---|" + "---|" * len(Action)]
    for state in State:
        cells = [BUTTONS[(state, a)].value if (state, a) in BUTTONS else "-" for a in Action]
        buttons.append(f"| {state.value} | " + " | ".join(cells) + " |")
    return "\n".join([
        README_BEGIN, "", "## State diagram", "",
        "Drawn from the supervisor's transition table (`firmware/supervisor.py`); "
        "`tests/unit/test_supervisor_table.py` fails when this copy differs from the table.",
        "", "```mermaid", diagram().rstrip("\n"), "```", "",
        "What a button press means in each state (a dash: the press does nothing):", "",
        *buttons, "", README_END]) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--diagram"]:
        sys.stdout.write(diagram())
        return 0
    if argv == ["--readme"]:
        sys.stdout.write(readme_section())
        return 0
    sys.stderr.write("usage: python -m firmware.supervisor --diagram | --readme\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
