"""What the box's integrations send, checked without a network: Home Assistant's discovery
payloads against the fields its documented MQTT discovery schema requires
(https://www.home-assistant.io/integrations/mqtt/ and the event, binary_sensor, sensor and
button pages), the door button only with commands allowed; the MQTT command grammar; the
webhook signature against an HMAC computed here and the replay window; the MQTT queue's bound
(the oldest dropped and counted); registration lost and restored told by the chronicle; the
one-line configuration errors of the new sections."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

import pytest

from devtools.box.fakes import FakeBox, fake_config, run
from firmware import supervisor as sv
from firmware.config import ConfigError, MqttSettings, WebhookSettings, parse_config
from firmware.outbound import Event, Kind
from firmware.outbound.discovery import Topics, configs, removed
from firmware.outbound.mqtt import MqttLink, parse_command
from firmware.outbound.webhook import REPLAY_WINDOW, Webhook, signature, verify

# Home Assistant's MQTT discovery: the keys each platform requires, and the device block
REQUIRED = {"event": {"state_topic", "event_types"}, "binary_sensor": {"state_topic"},
            "sensor": {"state_topic"}, "button": {"command_topic"}}
EVENT_DEVICE_CLASSES = {"doorbell", "button", "motion"}
BINARY_DEVICE_CLASSES = {"connectivity", "door", "lock", "occupancy", "opening", "problem"}
TOPIC = re.compile(r"homeassistant/(event|binary_sensor|sensor|button)/([A-Za-z0-9_-]+)/"
                   r"([A-Za-z0-9_-]+)/config")
SNAPSHOT_KEYS = {"state", "registered", "server", "in_call", "remote", "leds", "door_locked",
                 "audio", "update_alert", "version", "door_open"}


@pytest.mark.parametrize("allowed", [False, True])
def test_discovery_follows_home_assistants_schema(allowed: bool) -> None:
    topics = Topics("intercom/door1", "intercom/door1/command")
    found = configs(topics, "door1", "1.2.3", "homeassistant", allowed)
    components = {}
    for topic, payload in found:
        m = TOPIC.fullmatch(topic)
        assert m, topic
        component, node, obj = m.groups()
        components[obj] = component
        assert REQUIRED[component] <= set(payload), (topic, REQUIRED[component] - set(payload))
        assert payload["unique_id"] and payload["unique_id"].startswith(node)
        device = payload["device"]
        assert device["identifiers"] == ["intercom_door1"] and device["sw_version"] == "1.2.3"
        assert (payload["availability_topic"], payload["payload_available"],
                payload["payload_not_available"]) == (topics.availability, "online", "offline")
        for key in re.findall(r"value_json\.(\w+)", payload.get("value_template", "")):
            assert key in SNAPSHOT_KEYS, key
        if component == "event":
            assert payload["event_types"] == ["press"]
            assert payload["device_class"] in EVENT_DEVICE_CLASSES
        if component == "binary_sensor" and "device_class" in payload:
            assert payload["device_class"] in BINARY_DEVICE_CLASSES
        if component == "sensor":
            assert payload["device_class"] == "enum"
            assert set(payload["options"]) == set(sv.STATES), "every state a valid option"
        if component == "button":
            assert payload["command_topic"] == topics.command
            assert parse_command(payload["payload_press"].encode()) == {"cmd": "open_door"}
    assert components == {"doorbell": "event", "registered": "binary_sensor",
                          "in_call": "binary_sensor", "door_open": "binary_sensor",
                          "call_state": "sensor", **({"open_door": "button"} if allowed else {})}
    gone = removed("door1", "homeassistant", allowed)
    assert gone == ([] if allowed else ["homeassistant/button/intercom_door1/open_door/config"])


@pytest.mark.parametrize("payload, expected", [
    (b"open_door", {"cmd": "open_door"}),
    (b"  hangup\n", {"cmd": "hangup"}),
    (b"call", {"cmd": "call"}),
    (b"call 5001", {"cmd": "call", "target": "5001"}),
    (b'{"command": "call", "target": "*55"}', {"cmd": "call", "target": "*55"}),
    (b'{"command": "open_door"}', {"cmd": "open_door"}),
    (b"call sip:evil@198.51.100.7", "call TARGET must be"),
    (b"call 5001 5002", "call TARGET must be"),
    (b"open_door now", "takes no argument"),
    (b"reboot", "unknown command"),
    (b'{"command": "call", "target": 5001}', "call TARGET must be"),
    (b"[1]", "unknown command"),
    (b'{"command": ', "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"x" * 300, "longer than 256 bytes"),
])
def test_mqtt_commands_are_three_words_and_anything_else_is_refused(
        payload: bytes, expected: object) -> None:
    got = parse_command(payload)
    if isinstance(expected, dict):
        assert got == expected
    else:
        assert isinstance(got, str) and str(expected) in got, got


def test_the_webhook_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    secret, body, stamp = "0123456789abcdef", b'{"kind": "door_opened"}', "1700000000"
    mine = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(secret, stamp, body) == f"sha256={mine}"
    headers = {"X-Intercom-Timestamp": stamp, "X-Intercom-Signature": f"sha256={mine}"}
    assert verify(secret, headers, body, now=1700000000 + REPLAY_WINDOW)
    assert not verify(secret, headers, body, now=1700000000 + REPLAY_WINDOW + 1), "replayed"
    assert not verify(secret, headers, body + b" ", now=1700000000), "body changed"
    assert not verify("another-secret-000", headers, body, now=1700000000)
    assert not verify(secret, {**headers, "X-Intercom-Timestamp": "1700000001"}, body,
                      now=1700000000), "timestamp changed"


def test_the_mqtt_queue_is_bounded_dropping_the_oldest_and_counting() -> None:
    link = MqttLink(MqttSettings(host="127.0.0.1", port=1, queue=5, recent=3), "door1", "1",
                    post=lambda f: f(), command=lambda req: {"ok": True})
    try:
        for seq in range(1, 9):
            link(Event(Kind.LOCKOUT_ENDED, seq, time.time(), "run", "idle"))
        report = link.report()
        assert (report["queued"], report["dropped"], report["connected"]) == (5, 3, False)
        assert all(f'"seq": {n},' in item[1].decode()
                   for n, item in zip(range(4, 9), link._queue, strict=True)), "the newest 5"
        assert len(link._recent) == 3
    finally:
        link.close()  # never started: nothing to join


def test_a_webhooks_queue_is_bounded_too_and_the_state_is_not_posted() -> None:
    hook = Webhook("https://127.0.0.1:9/h", WebhookSettings(queue=4), "door1")
    for seq in range(1, 8):
        hook(Event(Kind.LOCKOUT_ENDED, seq, time.time(), "run", "idle"))
    hook(Event(Kind.STATE, 8, time.time(), "run", "idle", snapshot={"state": "idle"}))
    report = hook.report()
    assert (report["queued"], report["dropped"]) == (4, 3)
    assert [b'"seq": 4,' in body for body in hook._queue] == [True, False, False, False]
    hook.close()  # never started


def test_an_update_rollback_and_its_acknowledgement_are_told() -> None:
    box = FakeBox()
    seen: list[Event] = []
    box.app.outbox.subscribe(seen.append)

    async def scenario() -> None:
        await box.app.start()
        box.pump()
        box.app.dispatch(sv.UpdateAlert("the new release did not register"))
        box.app.dispatch(sv.UpdateAlert(None))

    run(scenario())
    told = [(e.kind, e.reason) for e in seen if e.kind is not Kind.STATE]
    assert told == [(Kind.UPDATE_ROLLED_BACK, "the new release did not register"),
                    (Kind.UPDATE_ALERT_CLEARED, None)], told


def test_registration_lost_and_restored_are_told_with_the_server() -> None:
    box = FakeBox()
    seen: list[Event] = []
    box.app.outbox.subscribe(seen.append)

    async def scenario() -> None:
        await box.app.start()
        box.pump()
        box.app.dispatch(sv.RegistrationUp())
        box.app.dispatch(sv.RegistrationUp())  # a refresh: nothing new
        box.app.dispatch(sv.RegistrationDown("408 no answer"))
        box.app.dispatch(sv.RegistrationDown("408 no answer"))
        box.app.dispatch(sv.RegistrationUp())

    run(scenario())
    told = [(e.kind, e.first, e.reason) for e in seen if e.kind is not Kind.STATE]
    assert told == [(Kind.REGISTRATION_RESTORED, True, None),
                    (Kind.REGISTRATION_LOST, None, "408 no answer"),
                    (Kind.REGISTRATION_RESTORED, False, None)], told
    assert {e.server for e in seen if e.kind is not Kind.STATE} == {"127.0.0.2:5080"}
    leds = [e.snapshot["leds"].get("registered") for e in seen if e.snapshot]
    assert leds[-3:] == ["on", "off", "on"], "the retained state follows the registered LED"


@pytest.mark.parametrize("section, error", [
    ("mqtt: {host: h, tls: false, allow_commands: true}",
     "mqtt.allow_commands (line 1) needs mqtt.tls: true"),
    ("mqtt: {host: h, tls: false, username: u, password: p}",
     "mqtt.password (line 1) would cross the network in clear text"),
    ("mqtt: {host: h, password: p}", "mqtt.password (line 1) needs mqtt.username"),
    ("mqtt: {host: h, prefix: 'a/+/b'}", "mqtt.prefix (line 1) must be topic levels"),
    ("mqtt: {host: h, command_topic: '$SYS/x'}", "mqtt.command_topic (line 1) must be topic"),
    ("mqtt: {host: h, ca_file: /nonexistent.pem}", "mqtt.ca_file (line 1) must name the CA"),
    ("mqtt: {host: h, queue: 0}", "mqtt.queue (line 1) must be between 1 and 10000"),
    ("mqtt: {hots: h}", "unknown key mqtt.hots (line 1); did you mean 'host'?"),
    ("webhooks: {urls: ['http://x.example/h'], secret: 0123456789abcdef}",
     "webhooks.urls (line 1) has 'http://x.example/h'"),
    ("webhooks: {urls: ['https://u:p@x.example/h'], secret: 0123456789abcdef}",
     "webhooks.urls (line 1) has"),
    ("webhooks: {urls: ['https://x.example/h'], secret: short}",
     "webhooks.secret (line 1) must be set, at least 16 characters"),
    ("log: {events: 0}", "log.events (line 1) must be between 1 and 1000"),
])
def test_the_new_sections_fail_in_one_line_naming_the_key(section: str, error: str) -> None:
    text = "{sip: {server: 127.0.0.1, username: '5002'}, " + section + "}"
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    message = str(exc.value)
    assert error in message and "\n" not in message, message
    assert "0123456789abcdef" not in message and "'p'" not in message, "no secret shown"


def test_defaults_are_off_and_ports_follow_tls() -> None:
    cfg = parse_config(fake_config())
    assert cfg.mqtt.host is None and cfg.mqtt.allow_commands is False and not cfg.webhooks.urls
    tls = parse_config(fake_config(mqtt={"host": "broker.example"}))
    plain = parse_config(fake_config(mqtt={"host": "broker.example", "tls": False}))
    assert (tls.mqtt.port, plain.mqtt.port) == (8883, 1883)
    secret = parse_config(fake_config(mqtt={"host": "b", "username": "u", "password": "pw-1"},
                                      webhooks={"urls": ["https://h.example/x"],
                                                "secret": "s" * 20}))
    assert "pw-1" not in repr(secret) and "s" * 20 not in repr(secret), "never in repr()"
