"""Every building event of real calls through Asterisk 22 reaches a real Mosquitto (TLS, test
CA, password file, the shipped ACL) and a local HTTPS webhook receiver that checks each HMAC:
the box registers; its call button calls reception (a baresip phone) which rings and answers;
a second caller is refused busy;
the door code opens the door (DTMF by RFC 4733 through the PBX); wrong codes lock the door
code, and an MQTT open_door and the right code are refused during the lockout; it ends;
reception hangs up; reception calls the box, which answers and hangs up from the control
socket; Asterisk stops and starts again (registration lost, then restored); an MQTT open_door
opens the door. Each event carries its fields; no payload holds a key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.mosquitto import Mosquitto, local_ca
from devtools.waiting import wait_for
from devtools.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

NAME = "door1"
BASE = f"intercom/{NAME}"
USERS = {NAME: "door1-secret-pw", "homeassistant": "ha-secret-pw"}
SECRET = "webhook-secret-0123456789"
CODE = "*7"


def test_every_event_of_real_calls_reaches_mqtt_and_a_signed_webhook(
        tmp_path: Path, asterisk, intercom, baresip) -> None:
    ca = local_ca(tmp_path / "ca")
    broker = Mosquitto(tmp_path / "mosquitto", tls=ca, users=USERS).start()
    hooks = WebhookReceiver(ca, SECRET).start()
    hooks.fail_next = 2  # the first event needs two retries
    ha = None
    try:
        ha = broker.listener("homeassistant")
        phone = baresip("5001")
        box = intercom(
            keepalive_interval=1, t1=0.1, t2=0.4, t4=0.5, retry_min=1, retry_max=2,
            log_level="info", gpio={"relay": {"pin": 26, "seconds": 0.5}},
            calls={"door_code": CODE, "door_code_max_failures": 2, "door_code_lockout": 4},
            mqtt={"host": "127.0.0.1", "port": broker.tls_port, "ca_file": str(ca.ca),
                  "username": NAME, "password": USERS[NAME], "name": NAME,
                  "allow_commands": True},
            webhooks={"urls": [hooks.url], "secret": SECRET, "ca_file": str(ca.ca)})
        box.wait_state("idle")
        reg = ha.wait_event(BASE, "registration_restored")
        assert reg["first"] is True and reg["server"] == f"127.0.0.1:{asterisk.port}"
        # the box calls reception
        assert box.cmd("press", "call")["ok"]
        press = ha.wait_event(BASE, "button_pressed")
        assert (press["button"], press["action"], press["target"]) == ("call", "call", "5001")
        started = ha.wait_event(BASE, "call_started")
        assert (started["direction"], started["peer"]) == ("outgoing", "5001")
        phone.wait_event("CALL_INCOMING", 10)
        assert ha.wait_event(BASE, "call_ringing")["direction"] == "outgoing"
        phone.command("accept")
        phone.wait_event("CALL_ESTABLISHED", 10)
        answered = ha.wait_event(BASE, "call_answered")
        assert answered["state"] == "in_call" and answered["peer"] == "5001"
        state = wait_for(lambda: (m := ha.last(f"{BASE}/state")) and m.json()["in_call"] and m,
                         10, 0.1, "the retained state in a call")
        assert state.json()["leds"]["in_call"] == "on"  # live: delivered without the flag
        # a second caller while the box talks: refused busy, told as call_refused
        caller = baresip("5003")
        caller.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
        busy = ha.wait_event(BASE, "call_refused")
        assert busy["reason"] == "busy" and "5003" in busy["peer"], busy
        assert busy["direction"] == "incoming" and busy["state"] == "in_call"
        # the door code through the PBX, then two wrong ones: the lockout
        phone.command("sndcode", CODE)
        opened = ha.wait_event(BASE, "door_opened")
        assert (opened["by"], opened["via"], opened["peer"]) == ("dtmf", "rtp", "5001")
        wait_for(lambda: (m := ha.last(f"{BASE}/state")) and m.json()["door_open"], 5, 0.05,
                 "door_open in the retained state")
        for attempt in (1, 2):
            phone.command("sndcode", "12")
            wrong = ha.wait_event(BASE, "wrong_code", failures=attempt)
            assert wrong["max_failures"] == 2 and wrong["peer"] == "5001"
        lockout = ha.wait_event(BASE, "lockout_started")
        assert lockout["seconds"] == 4
        ha.publish(f"{BASE}/command", "open_door")
        refused = ha.wait_event(BASE, "command", command="open_door")
        assert refused["accepted"] is False and "locked" in refused["reason"]
        phone.command("sndcode", CODE)  # the right code, but locked: ignored
        assert ha.wait_event(BASE, "code_during_lockout")["peer"] == "5001"
        ha.wait_event(BASE, "lockout_ended", timeout=10)
        # reception hangs up
        phone.command("hangup")
        ended = ha.wait_event(BASE, "call_ended")
        assert (ended["ended_by"], ended["direction"], ended["peer"]) == ("remote", "outgoing",
                                                                            "5001")
        assert ended["duration"] > 1
        box.wait_state("idle")
        # reception calls the box; the box answers and hangs up (control socket)
        phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
        incoming = ha.wait_event(BASE, "call_started", direction="incoming")
        assert "5001" in incoming["peer"]
        box.wait_state("ringing")
        assert box.cmd("answer")["ok"]
        ha.wait_event(BASE, "call_answered", direction="incoming")
        box.wait_state("in_call")
        assert box.cmd("hangup")["ok"]
        hung = ha.wait_event(BASE, "call_ended", direction="incoming")
        assert hung["ended_by"] == "control"
        box.wait_state("idle")
        # the PBX goes away and comes back: registration lost, then restored (not the first)
        asterisk.stop()
        lost = ha.wait_event(BASE, "registration_lost", timeout=20)
        assert lost["server"] == f"127.0.0.1:{asterisk.port}" and lost["reason"], lost
        asterisk.start()
        back = ha.wait_event(BASE, "registration_restored", first=False, timeout=20)
        assert back["server"] == f"127.0.0.1:{asterisk.port}"
        box.wait_state("idle")
        # the door by MQTT, now that the lockout is over
        ha.publish(f"{BASE}/command", "open_door")
        by_mqtt = ha.wait_event(BASE, "door_opened", by="mqtt")
        assert by_mqtt["state"] == "idle"
        ha.wait_event(BASE, "command", command="open_door", accepted=True)  # the last event
        events = ha.events(BASE)
        wait_for(lambda: len(hooks.events) >= len(events), 30, 0.1, "the webhook to catch up")
        status = box.status()
    finally:
        if ha is not None:
            ha.stop()
        hooks.stop()
        broker.stop()
    kinds = [e["kind"] for e in events]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert hooks.kinds()[:len(kinds)] == kinds, "the webhook got the same events in order"
    assert hooks.rejected == [] and hooks.attempts >= len(kinds) + 2
    assert status["events"]["webhooks"][0]["retries"] >= 2
    assert status["events"]["webhooks"][0]["failed"] == 0
    assert status["door_openings"] == 2
    payloads = [m.payload.decode() for m in ha.messages] + [json.dumps(hooks.events)]
    assert not any(f'"{CODE}"' in p or '"12"' in p for p in payloads), "a key in a payload"
    assert not any(USERS[NAME] in p or SECRET in p for p in payloads), "a secret in a payload"
    log = box.log()
    assert SECRET not in log and USERS[NAME] not in log
    recent = box.cmd("events", "--json")["events"]
    assert [e["kind"] for e in recent][-len(kinds):] == kinds, "the visitor log"
