"""The box's behaviour as one pure state machine whose transitions are a table of data.

Owns the states a user sees (offline, idle, calling, ringing, in_call), the transition table
``TRANSITIONS`` (state, event, guard) -> (next state, effects), the button table ``BUTTONS``
(state, button action) -> what the press means, the button actions a configuration may name
(``Action``), the LEDs and the door relay, its timers (ring timeout, auto-answer, maximum call
duration, code entry, door-code lockout: one event kind each), and the door code with its
lockout across calls. Imports nothing from the firmware: the configuration imports from here.

``Supervisor.handle(event, now) -> [commands]``: no I/O, no clock of its own (``now`` is the
caller's monotonic clock, used by the door-code window and lockout), no SIP, no GPIO; the
application executes the commands and feeds back the events (a ``StartTimer``'s name comes back
as ``timer_event(name)`` when it fires). Only ``handle`` changes the state, and only to the
table's next state: an effect computes commands, never the state, and never asks which state it
is in: what differs per state is a row. Effects and guards are the functions and ``Guard``
objects themselves, so a misspelt one fails at import. The state diagram and the full table in
README.md are drawn from these tables (``python -m firmware.supervisor --readme``).

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

``OpenDoor`` (a command from the control socket or MQTT) pulses the relay like the right door
code, in any state, and is refused while the door code is locked out: a command is never a way
around the lockout.

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
from typing import Any, ClassVar


class Action(StrEnum):
    """What a button does (``gpio.buttons.NAME.action``); ``BUTTONS`` maps (state, action) to
    what a press means."""

    CALL = "call"
    ANSWER = "answer"
    HANGUP = "hangup"
    TALK = "talk"  # one button for everything: call, answer or hang up as the state needs


class State(StrEnum):
    OFFLINE = "offline"
    IDLE = "idle"
    CALLING = "calling"
    RINGING = "ringing"
    IN_CALL = "in_call"


class Timer(StrEnum):
    """The supervisor's timers (``StartTimer``/``CancelTimer`` names); each fires its own
    event kind (``TIMER_EVENTS``)."""

    RING = "ring"
    AUTO_ANSWER = "auto_answer"
    MAX_DURATION = "max_duration"
    CODE = "code"
    DOOR_LOCKOUT = "door_lockout"


class EventKind(StrEnum):
    PRESS = "Press"
    REGISTRATION_UP = "RegistrationUp"
    REGISTRATION_DOWN = "RegistrationDown"
    INCOMING = "Incoming"
    REMOTE_RINGING = "RemoteRinging"
    CONNECTED = "Connected"
    ENDED = "Ended"
    DIGIT = "Digit"
    RING_TIMEOUT = "RingTimeout"
    AUTO_ANSWER_DUE = "AutoAnswerDue"
    MAX_DURATION_REACHED = "MaxDurationReached"
    CODE_TIMEOUT = "CodeTimeout"
    LOCKOUT_OVER = "LockoutOver"
    AUDIO_FAILED = "AudioFailed"
    AUDIO_RECOVERED = "AudioRecovered"
    AUDIO_LOST = "AudioLost"
    USER_CALL = "UserCall"
    USER_ANSWER = "UserAnswer"
    USER_HANGUP = "UserHangup"
    UPDATE_ALERT = "UpdateAlert"
    OPEN_DOOR = "OpenDoor"


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
class RingTimeout:
    """``calls.ring_timeout`` passed and nobody answered (either way)."""

    kind: ClassVar[EventKind] = EventKind.RING_TIMEOUT
    timer: ClassVar[Timer] = Timer.RING


@dataclass(frozen=True)
class AutoAnswerDue:
    """``calls.auto_answer_delay`` passed while ringing."""

    kind: ClassVar[EventKind] = EventKind.AUTO_ANSWER_DUE
    timer: ClassVar[Timer] = Timer.AUTO_ANSWER


@dataclass(frozen=True)
class MaxDurationReached:
    """``calls.max_duration`` passed in a call."""

    kind: ClassVar[EventKind] = EventKind.MAX_DURATION_REACHED
    timer: ClassVar[Timer] = Timer.MAX_DURATION


@dataclass(frozen=True)
class CodeTimeout:
    """No further key within ``code_timeout``: the partial door code is forgotten."""

    kind: ClassVar[EventKind] = EventKind.CODE_TIMEOUT
    timer: ClassVar[Timer] = Timer.CODE


@dataclass(frozen=True)
class LockoutOver:
    """``calls.door_code_lockout`` passed: the door code works again."""

    kind: ClassVar[EventKind] = EventKind.LOCKOUT_OVER
    timer: ClassVar[Timer] = Timer.DOOR_LOCKOUT


@dataclass(frozen=True)
class AudioFailed:
    kind: ClassVar[EventKind] = EventKind.AUDIO_FAILED
    reason: str


@dataclass(frozen=True)
class AudioRecovered:
    kind: ClassVar[EventKind] = EventKind.AUDIO_RECOVERED


@dataclass(frozen=True)
class AudioLost:
    """The sound card went during a call (unplugged): error LED and new calls refused as for
    AudioFailed, but the call stays up (the media loop keeps its RTP clock and sends silence
    until the card is back: AudioRecovered)."""

    kind: ClassVar[EventKind] = EventKind.AUDIO_LOST
    reason: str


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
class OpenDoor:
    """``intercom open-door`` or an MQTT command (``source``): the relay pulses exactly as for
    the door code, and not at all while the door code is locked out."""

    kind: ClassVar[EventKind] = EventKind.OPEN_DOOR
    source: str


@dataclass(frozen=True)
class UserAnswer:
    kind: ClassVar[EventKind] = EventKind.USER_ANSWER


@dataclass(frozen=True)
class UserHangup:
    kind: ClassVar[EventKind] = EventKind.USER_HANGUP


TimerEvent = RingTimeout | AutoAnswerDue | MaxDurationReached | CodeTimeout | LockoutOver
Event = (Press | RegistrationUp | RegistrationDown | Incoming | RemoteRinging | Connected | Ended
         | Digit | TimerEvent | AudioFailed | AudioRecovered | AudioLost | UserCall | UserAnswer
         | UserHangup | UpdateAlert | OpenDoor)

# what each timer fires; every Timer has exactly one (checked at import)
TIMER_EVENTS: dict[Timer, type[TimerEvent]] = {
    cls.timer: cls for cls in (RingTimeout, AutoAnswerDue, MaxDurationReached, CodeTimeout,
                               LockoutOver)}
if set(TIMER_EVENTS) != set(Timer):
    raise ImportError(f"timers without an event: {set(Timer) - set(TIMER_EVENTS)}")


def timer_event(name: str) -> TimerEvent:
    """The event a ``StartTimer(name)`` fires when it runs out."""
    return TIMER_EVENTS[Timer(name)]()

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
    """(Re)start ``name``; when it runs out the application feeds ``timer_event(name)``."""

    name: Timer
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    name: Timer


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


# ------------------------------------------------------------------------------- the machine

# an effect: a Supervisor method run on the event, returning commands (never the state)
Effect = Callable[["Supervisor", Any], list[Command]]


@dataclass(frozen=True)
class Guard:
    """A condition on the supervisor's memory (never on its state: that is the row's) that
    picks one of the rows of a (state, event)."""

    label: str
    holds: Callable[[Supervisor], bool] = field(compare=False)


@dataclass(frozen=True)
class Row:
    """One transition: in ``state``, on ``event`` (when ``guard`` holds), run ``effects`` in
    order and go to ``next`` (None = stay)."""

    state: State
    event: EventKind
    next: State | None
    effects: tuple[Effect, ...] = ()
    guard: Guard | None = None


# commands run when leaving a state (its timers and tones end with it)
ON_EXIT: dict[State, tuple[Command, ...]] = {
    State.RINGING: (CancelTimer(Timer.RING), CancelTimer(Timer.AUTO_ANSWER), Tone("off")),
    State.CALLING: (CancelTimer(Timer.RING), Tone("off")),
    State.IN_CALL: (CancelTimer(Timer.MAX_DURATION), CancelTimer(Timer.CODE)),
}

# steady LED pattern per state (the error and registered LEDs follow registration and faults)
STATE_LEDS: dict[State, dict[str, str]] = {
    State.OFFLINE: {"ringing": "off", "calling": "off", "in_call": "off"},
    State.IDLE: {"ringing": "off", "calling": "off", "in_call": "off"},
    State.CALLING: {"ringing": "off", "calling": "blink", "in_call": "off"},
    State.RINGING: {"ringing": "blink", "calling": "off", "in_call": "off"},
    State.IN_CALL: {"ringing": "off", "calling": "off", "in_call": "on"},
}
STATES = tuple(s.value for s in State)
DUPLICATE_WINDOW = 1.0  # seconds within which INFO and RFC 4733 copies of a key are one key

# (state, button action) -> the user request the press stands for; no row: the press does nothing
BUTTONS: dict[tuple[State, Action], EventKind] = {
    (State.OFFLINE, Action.CALL): EventKind.USER_CALL,
    (State.OFFLINE, Action.TALK): EventKind.USER_CALL,
    (State.IDLE, Action.CALL): EventKind.USER_CALL, (State.IDLE, Action.TALK): EventKind.USER_CALL,
    (State.CALLING, Action.HANGUP): EventKind.USER_HANGUP,
    (State.CALLING, Action.TALK): EventKind.USER_HANGUP,
    (State.RINGING, Action.ANSWER): EventKind.USER_ANSWER,
    (State.RINGING, Action.TALK): EventKind.USER_ANSWER,
    (State.RINGING, Action.HANGUP): EventKind.USER_HANGUP,
    (State.IN_CALL, Action.HANGUP): EventKind.USER_HANGUP,
    (State.IN_CALL, Action.TALK): EventKind.USER_HANGUP,
}

# why a user's request is refused when the state has no row for it
_REFUSALS = {EventKind.USER_CALL: "cannot call while {state}",
             EventKind.USER_ANSWER: "nothing to answer (state {state})",
             EventKind.USER_HANGUP: "no call to hang up (state {state})"}


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
        return [Led("error", "fast"), StartTimer(Timer.DOOR_LOCKOUT, left),
                Log("warning", f"door code still locked for {left:.0f} s (kept over a restart)")]

    def row_for(self, kind: EventKind) -> Row | None:
        """The row that applies to ``kind`` now: the first of this state's rows whose guard
        holds (guards of one state and event exclude each other, so there is at most one)."""
        return next((r for r in _INDEX.get((self.state, kind), ())
                     if r.guard is None or r.guard.holds(self)), None)

    def handle(self, event: Event, now: float = 0.0) -> list[Command]:
        """Feed one event at the caller's monotonic time ``now``; returns the commands."""
        self.now = now
        if isinstance(event, Press):
            request = self._button(event)
            if isinstance(request, list):
                return request
            event = request
        row = self.row_for(event.kind)
        if row is None:
            refusal = _REFUSALS.get(event.kind)
            return [Refused(refusal.format(state=self.state))] if refusal else []
        cmds: list[Command] = [c for effect in row.effects for c in effect(self, event)]
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

    def _leave(self, state: State) -> list[Command]:
        """Any change of state ends what a call kept (the door-code entry of this call)."""
        self.digits, self.wrong_codes = "", 0
        self._recent.clear()
        return list(ON_EXIT.get(state, ()))

    @property
    def locked(self) -> bool:
        return self.lockout_until is not None and self.now < self.lockout_until

    def _error_led(self) -> str:
        if not (self.registered and self.audio_ok and not self.locked):
            return "fast"
        return "slow" if self.update_alert else "off"

    # -- effects: commands only; the table sets the state and says which run where ----------
    def _dial(self, ev: UserCall) -> list[Command]:
        self.remote = ev.target
        cmds: list[Command] = [Dial(ev.target), StartTimer(Timer.RING, self.policy.ring_timeout)]
        if self.policy.ringback:
            cmds.append(Tone("ringback"))
        return cmds

    def _answer(self, ev: Event) -> list[Command]:
        return [Answer()]

    def _hangup(self, ev: Event) -> list[Command]:
        return [Hangup()]  # the call ends when SIP says so (Ended)

    def _decline(self, ev: Event) -> list[Command]:
        return [Reject(603)]

    def _reject_unavailable(self, ev: Event) -> list[Command]:
        return [Reject(480)]

    def _ring(self, ev: Incoming) -> list[Command]:
        self.remote = ev.remote
        cmds: list[Command] = [StartTimer(Timer.RING, self.policy.ring_timeout)]
        if self.policy.ring_tone:
            cmds.append(Tone("ring"))
        if self.policy.auto_answer:
            cmds.append(StartTimer(Timer.AUTO_ANSWER, self.policy.auto_answer_delay))
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
            return [StartTimer(Timer.MAX_DURATION, self.policy.max_duration)]
        return []

    def _ended(self, ev: Ended) -> list[Command]:
        self.remote = None
        return [Log("info", f"call ended: {ev.reason}")]

    def _log_max_duration(self, ev: MaxDurationReached) -> list[Command]:
        return [Log("info", "maximum call duration reached")]

    def _forget_digits(self, ev: CodeTimeout) -> list[Command]:
        self.digits = ""
        return []

    def _lockout_over(self, ev: LockoutOver) -> list[Command]:
        self.lockout_until = None
        return [Led("error", self._error_led()),
                Log("info", "door code lockout over: the door code works again")]

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
            return [StartTimer(Timer.CODE, self.policy.code_timeout)] if self.digits else []
        entered, self.digits = self.digits, ""
        right = hmac.compare_digest(entered.encode(), code.encode())
        cmds: list[Command] = [CancelTimer(Timer.CODE)]
        if self.locked:
            return cmds + [Log("warning", "door code entered during the lockout: ignored")]
        if right:
            return cmds + [PulseRelay(self.policy.relay_seconds),
                           Log("info", "door code accepted: opening the door")]
        return cmds + self._wrong_code()

    def _open_door(self, ev: OpenDoor) -> list[Command]:
        return [PulseRelay(self.policy.relay_seconds),
                Log("info", f"door opened by {ev.source} command")]

    def _refuse_locked(self, ev: OpenDoor) -> list[Command]:
        left = (self.lockout_until or self.now) - self.now
        why = f"door locked after wrong door codes for another {left:.0f} s"
        return [Refused(why), Log("warning", f"{ev.source} command to open the door refused: "
                                             f"{why}")]

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
                     Led("error", "fast"), StartTimer(Timer.DOOR_LOCKOUT, p.door_code_lockout)]
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

    def _audio_failed(self, ev: AudioFailed | AudioLost) -> list[Command]:
        self.audio_ok = False
        self.audio_reason = ev.reason
        return [Led("error", "fast"), Log("error", ev.reason)]


# ------------------------------------------------------------------------------- the tables
AUDIO_OK = Guard("audio ok", lambda s: s.audio_ok)
AUDIO_FAILED = Guard("audio failed", lambda s: not s.audio_ok)
REGISTERED = Guard("registered", lambda s: s.registered)
NOT_REGISTERED = Guard("not registered", lambda s: not s.registered)
LOCKED = Guard("door code locked", lambda s: s.locked)
UNLOCKED = Guard("door code not locked", lambda s: not s.locked)
GUARDS = (AUDIO_OK, AUDIO_FAILED, REGISTERED, NOT_REGISTERED, LOCKED, UNLOCKED)

S, E, X = State, EventKind, Supervisor
_ALL = tuple(State)
_CALL = (S.CALLING, S.RINGING, S.IN_CALL)
_REST = (S.OFFLINE, S.IDLE)


def _rows(states: tuple[State, ...], event: EventKind, next_: State | None,
          *effects: Effect, guard: Guard | None = None) -> list[Row]:
    return [Row(s, event, next_, effects, guard) for s in states]


TRANSITIONS: tuple[Row, ...] = tuple([
    # offline: the PBX may still route it; without audio no half-call (refused, error LED)
    *_rows(_REST, E.USER_CALL, S.CALLING, X._dial, guard=AUDIO_OK),
    *_rows(_REST, E.USER_CALL, None, X._refuse_call_no_audio, guard=AUDIO_FAILED),
    *_rows(_REST, E.INCOMING, S.RINGING, X._ring, guard=AUDIO_OK),
    *_rows(_REST, E.INCOMING, None, X._refuse_no_audio, guard=AUDIO_FAILED),
    *_rows(_CALL, E.INCOMING, None, X._busy),
    Row(S.CALLING, E.REMOTE_RINGING, None),
    Row(S.CALLING, E.CONNECTED, S.IN_CALL, (X._connected,)),
    Row(S.RINGING, E.CONNECTED, S.IN_CALL, (X._connected,)),
    *_rows(_CALL, E.ENDED, S.IDLE, X._ended, guard=REGISTERED),
    *_rows(_CALL, E.ENDED, S.OFFLINE, X._ended, guard=NOT_REGISTERED),
    Row(S.IN_CALL, E.DIGIT, None, (X._digit,)),
    Row(S.RINGING, E.USER_ANSWER, None, (X._answer,)),
    Row(S.CALLING, E.USER_HANGUP, None, (X._hangup,)),
    Row(S.RINGING, E.USER_HANGUP, None, (X._decline,)),
    Row(S.IN_CALL, E.USER_HANGUP, None, (X._hangup,)),
    # timers: a timer firing in a state without a row is stale and does nothing
    Row(S.RINGING, E.RING_TIMEOUT, None, (X._reject_unavailable,)),
    Row(S.CALLING, E.RING_TIMEOUT, None, (X._hangup,)),
    Row(S.RINGING, E.AUTO_ANSWER_DUE, None, (X._answer,)),
    Row(S.IN_CALL, E.MAX_DURATION_REACHED, None, (X._log_max_duration, X._hangup)),
    Row(S.IN_CALL, E.CODE_TIMEOUT, None, (X._forget_digits,)),
    *_rows(_ALL, E.LOCKOUT_OVER, None, X._lockout_over),
    Row(S.OFFLINE, E.REGISTRATION_UP, S.IDLE, (X._registration_up,)),
    *_rows((S.IDLE, *_CALL), E.REGISTRATION_UP, None, X._registration_up),
    Row(S.IDLE, E.REGISTRATION_DOWN, S.OFFLINE, (X._registration_down,)),
    *_rows((S.OFFLINE, *_CALL), E.REGISTRATION_DOWN, None, X._registration_down),
    # a card that fails ends the call it would carry
    *_rows(_REST, E.AUDIO_FAILED, None, X._audio_failed),
    *_rows((S.CALLING, S.IN_CALL), E.AUDIO_FAILED, None, X._audio_failed, X._hangup),
    Row(S.RINGING, E.AUDIO_FAILED, None, (X._audio_failed, X._reject_unavailable)),
    *_rows(_ALL, E.AUDIO_RECOVERED, None, X._audio_recovered),
    # a card that goes during a call: the call stays up (silence sent), new calls refused
    *_rows(_ALL, E.AUDIO_LOST, None, X._audio_failed),
    *_rows(_ALL, E.UPDATE_ALERT, None, X._update_alert),
    # the door by command: the same relay and the same lockout as the door code
    *_rows(_ALL, E.OPEN_DOOR, None, X._open_door, guard=UNLOCKED),
    *_rows(_ALL, E.OPEN_DOOR, None, X._refuse_locked, guard=LOCKED),
])


def _index(rows: tuple[Row, ...]) -> dict[tuple[State, EventKind], tuple[Row, ...]]:
    index: dict[tuple[State, EventKind], tuple[Row, ...]] = {}
    for row in rows:
        index[(row.state, row.event)] = (*index.get((row.state, row.event), ()), row)
    return index


_INDEX = _index(TRANSITIONS)


# ------------------------------------------------------------------------------- the diagram
README_BEGIN = "<!-- state-diagram: generated by `python -m firmware.supervisor --readme` -->"
README_END = "<!-- /state-diagram -->"


def _label(row: Row) -> str:
    text = row.event.value
    if row.event in (E.USER_CALL, E.USER_ANSWER, E.USER_HANGUP):
        actions = [a.value for a in Action if BUTTONS.get((row.state, a)) is row.event]
        if actions:
            text += f" (button {', '.join(actions)})"
    return text + (f" [{row.guard.label}]" if row.guard else "")


def _effects(row: Row) -> str:
    return ", ".join(f.__name__.lstrip("_") for f in row.effects) or "-"


def table() -> str:
    """Every row of TRANSITIONS as a Markdown table in the table's order, the states that
    share an event, guard, next state and effects on one line."""
    merged: dict[tuple[EventKind, Guard | None, State | None, str], list[str]] = {}
    for row in TRANSITIONS:
        merged.setdefault((row.event, row.guard, row.next, _effects(row)), []).append(row.state)
    lines = ["| state | event | guard | next | effects |", "|---|---|---|---|---|"]
    for (event, guard, next_, effects), states in merged.items():
        lines.append(f"| {', '.join(states)} | {event.value} | "
                     f"{guard.label if guard else '-'} | "
                     f"{next_.value if next_ else '(stays)'} | {effects} |")
    return "\n".join(lines) + "\n"


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
    """The README section (between its marker comments): the diagram, the button table and
    the full transition table."""
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
        *buttons, "",
        "<details><summary>Every transition: (state, event, guard) -> (next state, effects); "
        "an event a state has no row for does nothing (a user's request is refused)</summary>",
        "", table().rstrip("\n"), "", "</details>", "", README_END]) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--diagram"]:
        sys.stdout.write(diagram())
        return 0
    if argv == ["--table"]:
        sys.stdout.write(table())
        return 0
    if argv == ["--readme"]:
        sys.stdout.write(readme_section())
        return 0
    sys.stderr.write("usage: python -m firmware.supervisor --diagram | --table | --readme\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
