"""The supervisor's state table: buttons, calls, LEDs, timers, the door code, audio failure."""

from __future__ import annotations

from firmware import supervisor as sv

BUTTONS = {"call": sv.ButtonAction("call", "5001"), "flat2": sv.ButtonAction("call", "5003"),
           "answer": sv.ButtonAction("answer"), "hangup": sv.ButtonAction("hangup"),
           "talk": sv.ButtonAction("talk", "5001")}


def make(**kw) -> sv.Supervisor:
    s = sv.Supervisor(sv.Policy(buttons=BUTTONS, door_code="*1", relay_seconds=4, **kw))
    s.start()
    s.handle(sv.RegistrationUp())
    return s


def leds(cmds: list) -> dict[str, str]:
    return {c.name: c.mode for c in cmds if isinstance(c, sv.Led)}


def test_start_offline_until_registered() -> None:
    s = sv.Supervisor(sv.Policy(buttons=BUTTONS))
    assert s.state == "offline"
    assert leds(s.start()) == {"ringing": "off", "calling": "off", "in_call": "off",
                               "registered": "off", "error": "off"}
    cmds = s.handle(sv.RegistrationUp())
    assert s.state == "idle" and leds(cmds)["registered"] == "on"
    cmds = s.handle(sv.RegistrationDown("gone"))
    assert s.state == "offline" and leds(cmds) == {"registered": "off", "error": "fast",
                                                   "ringing": "off", "calling": "off",
                                                   "in_call": "off"}


def test_each_call_button_dials_its_own_target() -> None:
    s = make()
    cmds = s.handle(sv.Press("flat2"))
    assert sv.Dial("5003") in cmds and s.state == "calling"
    assert leds(cmds)["calling"] == "blink"
    assert sv.StartTimer("ring", 30.0) in cmds
    assert s.handle(sv.Press("call")) == [], "no second call while calling"
    cmds = s.handle(sv.Connected())
    assert s.state == "in_call" and leds(cmds) == {"ringing": "off", "calling": "off",
                                                   "in_call": "on"}
    assert sv.CancelTimer("ring") in cmds
    assert s.handle(sv.Press("hangup")) == [sv.Hangup()]
    s.handle(sv.Ended("local hangup"))
    assert s.state == "idle"


def test_incoming_ring_answer_and_reject() -> None:
    s = make(ring_tone=True)
    cmds = s.handle(sv.Incoming("reception"))
    assert s.state == "ringing" and leds(cmds)["ringing"] == "blink"
    assert sv.Tone("ring") in cmds
    assert s.handle(sv.Press("answer")) == [sv.Answer()]
    cmds = s.handle(sv.Connected())
    assert sv.Tone("off") in cmds and s.state == "in_call"
    t = make()
    t.handle(sv.Incoming("reception"))
    assert t.handle(sv.Press("hangup")) == [sv.Reject(603)]


def test_talk_button_does_what_the_state_needs() -> None:
    s = make()
    assert sv.Dial("5001") in s.handle(sv.Press("talk"))
    s.handle(sv.Connected())
    assert s.handle(sv.Press("talk")) == [sv.Hangup()]
    s.handle(sv.Ended("done"))
    s.handle(sv.Incoming("x"))
    assert s.handle(sv.Press("talk")) == [sv.Answer()]


def test_second_incoming_call_is_left_to_sip_busy() -> None:
    s = make()
    s.handle(sv.Incoming("a"))
    cmds = s.handle(sv.Incoming("b"))
    assert s.state == "ringing" and all(isinstance(c, sv.Log) for c in cmds)


def test_timers_ring_auto_answer_max_duration() -> None:
    s = make(auto_answer=True, auto_answer_delay=2.0, max_duration=60.0)
    cmds = s.handle(sv.Incoming("x"))
    assert sv.StartTimer("auto_answer", 2.0) in cmds
    assert s.handle(sv.AutoAnswerDue()) == [sv.Answer()]
    cmds = s.handle(sv.Connected())
    assert sv.StartTimer("max_duration", 60.0) in cmds
    assert sv.Hangup() in s.handle(sv.MaxDurationReached())
    t = make()
    t.handle(sv.Incoming("x"))
    assert t.handle(sv.RingTimeout()) == [sv.Reject(480)]
    u = make()
    u.handle(sv.Press("call"))
    assert u.handle(sv.RingTimeout()) == [sv.Hangup()]
    assert make().handle(sv.RingTimeout()) == [], "a stale timer does nothing"


def test_door_code_and_wrong_codes() -> None:
    s = make()
    s.handle(sv.Incoming("x"))
    s.handle(sv.Connected())
    assert s.handle(sv.Digit("*"))[0] == sv.StartTimer("code", 5.0)
    cmds = s.handle(sv.Digit("1"))
    assert sv.PulseRelay(4) in cmds
    for attempt in (1, 2):
        assert s.handle(sv.Digit("5")) == [sv.StartTimer("code", 5.0)], "not judged yet"
        cmds = s.handle(sv.Digit("5"))
        assert any(isinstance(c, sv.Log) and f"({attempt} of 5" in c.message for c in cmds)
        assert sv.Hangup() not in cmds
    s.handle(sv.Digit("*"))
    cmds = s.handle(sv.Digit("9"))
    assert sv.Hangup() in cmds, "three wrong codes end the call"
    assert not any(isinstance(c, sv.PulseRelay) for c in cmds)


def test_partial_code_times_out() -> None:
    s = make()
    s.handle(sv.Incoming("x"))
    s.handle(sv.Connected())
    s.handle(sv.Digit("*"))
    s.handle(sv.CodeTimeout())
    assert s.handle(sv.Digit("1")) == [sv.StartTimer("code", 5.0)] and s.wrong_codes == 0
    s.handle(sv.Digit("1"))
    assert s.wrong_codes == 1, "'11' is a wrong code"


def test_audio_failure_refuses_calls_with_480() -> None:
    s = make()
    cmds = s.handle(sv.AudioFailed("ALSA capture device 'x' cannot be opened"))
    assert leds(cmds)["error"] == "fast"
    assert s.handle(sv.Incoming("x"))[0] == sv.Reject(480) and s.state == "idle"
    cmds = s.handle(sv.AudioRecovered())
    assert leds(cmds)["error"] == "off"
    s.handle(sv.Incoming("x"))
    assert s.state == "ringing"
    assert s.handle(sv.AudioFailed("gone"))[-1] == sv.Reject(480)


def test_user_commands_and_unknown_buttons() -> None:
    s = make()
    assert sv.Dial("600") in s.handle(sv.UserCall("600"))
    assert s.handle(sv.UserHangup()) == [sv.Hangup()]
    s.handle(sv.Ended("x"))
    assert s.handle(sv.Press("doorbell"))[0].level == "warning"
    assert s.handle(sv.Press("answer")) == [], "answer does nothing when idle"
    s.handle(sv.Incoming("x"))
    assert s.handle(sv.UserAnswer()) == [sv.Answer()]
    assert s.handle(sv.UserHangup()) == [sv.Reject(603)]
