"""The box (a real ``intercom run`` process, not registering: no PBX needed) against a real
Mosquitto with TLS from a test CA, a password file and the shipped ACL
(``pbx/mosquitto-acl.conf``): the retained state and Home Assistant's discovery come back after
a broker restart (the broker forgets everything: no persistence); a killed box is marked
offline by its Last Will, a stopped one says so itself; MQTT commands are refused when they
are off, from any user but the one the ACL lets command, as retained messages and over plain
TCP; a broker whose certificate the box does not trust is one clear error, never a fallback; a
hostile broker announcing a huge packet is cut off before the box buffers it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.box.process import Intercom
from devtools.loopback import free_port
from devtools.mosquitto import Listener, Mosquitto, local_ca
from devtools.paths import REPO
from devtools.waiting import wait_for

pytestmark = pytest.mark.integration

NAME = "door1"
BASE = f"intercom/{NAME}"
USERS = {NAME: "door1-secret-pw", "door2": "door2-pw", "door3": "door3-pw",
         "homeassistant": "ha-secret-pw", "guest": "guest-pw"}
GPIO = {"relay": {"pin": 26, "seconds": 0.3}}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mq = Mosquitto(tmp_path / "mosquitto", tls=local_ca(tmp_path / "ca"), users=USERS,
                   plain=True)
    yield mq.start()
    mq.stop()


def mqtt_section(mq: Mosquitto, **extra: Any) -> dict[str, Any]:
    assert mq.tls is not None
    return {"host": "127.0.0.1", "port": mq.tls_port, "ca_file": str(mq.tls.ca),
            "username": NAME, "password": USERS[NAME], "name": NAME, **extra}


def start_box(tmp: Path, **mqtt: Any) -> Intercom:
    box = Intercom(tmp, free_port(), register=False, mqtt=mqtt, gpio=GPIO,
                   calls={"door_code_max_failures": 1, "door_code_lockout": 30})
    return box.start()


def online(listener: Listener) -> bool:
    last = listener.last(f"{BASE}/status")
    return last is not None and last.payload == b"online"


def test_retained_state_after_a_broker_restart_and_the_last_will(
        tmp_path: Path, broker: Mosquitto) -> None:
    box = start_box(tmp_path / "box", **mqtt_section(broker))
    try:
        box.wait_state("idle")
        ha = broker.listener("homeassistant")
        wait_for(lambda: online(ha), 15, 0.1, "the box online")
        state = wait_for(lambda: ha.last(f"{BASE}/state"), 10, 0.1, "the retained state")
        assert state.retain and state.json()["state"] == "idle"
        assert state.json()["registered"] is False and "password" not in state.payload.decode()
        ha.stop()
        broker.restart()  # no persistence: every retained message is gone
        fresh = broker.listener("homeassistant")
        wait_for(lambda: online(fresh), 30, 0.1, "the box online again after the restart")
        wait_for(lambda: fresh.last(f"{BASE}/state"), 10, 0.1, "the state retained again")
        wait_for(lambda: fresh.on(
            f"homeassistant/event/intercom_{NAME}/doorbell/config"), 10, 0.1, "discovery")
        fresh.stop()
        assert box.status()["events"]["mqtt"]["connects"] >= 2
        box.proc.send_signal(signal.SIGKILL)  # no goodbye: the broker sends the Last Will
        box.proc.wait(5)
        later = broker.listener("homeassistant")
        wait_for(lambda: (m := later.last(f"{BASE}/status")) and m.payload == b"offline"
                 and m.retain, 60, 0.2, "the Last Will: offline, retained")
        later.stop()
    finally:
        box.stop()
    log = box.log() + broker.log()
    assert USERS[NAME] not in log, "the password never reaches a log"


def test_commands_only_from_the_command_user_never_retained_never_when_off_or_locked(
        tmp_path: Path, broker: Mosquitto) -> None:
    ha = broker.listener("homeassistant")
    guest = broker.listener("guest")
    box_user = broker.listener(NAME)
    ha.publish(f"{BASE}/command", "open_door", retain=True)  # waiting for the next connect
    box = start_box(tmp_path / "on", **mqtt_section(broker, allow_commands=True))
    off = start_box(tmp_path / "off", **mqtt_section(broker, name="door2", username="door2",
                                                     password=USERS["door2"]))
    locked: Intercom | None = None
    try:
        for b in (box, off):
            b.wait_state("idle")
        wait_for(lambda: box.status()["events"]["mqtt"]["commands_refused"] == 1, 15, 0.1,
                 "the retained command refused")
        ha.publish(f"{BASE}/command", b"", retain=True)  # cleared
        assert box.status()["door_openings"] == 0
        # only the user the ACL lets command: the broker drops the others' messages
        guest.publish(f"{BASE}/command", "open_door")
        box_user.publish(f"{BASE}/command", "open_door")
        ha.publish(f"{BASE}/command", "open_door")
        opened = ha.wait_event(BASE, "door_opened")
        assert opened["by"] == "mqtt" and opened["box"] == NAME
        done = ha.wait_event(BASE, "command", command="open_door")
        assert done["accepted"] is True and done["by"] == "mqtt"
        wait_for(lambda: box.status()["door_openings"] == 1, 5, 0.05, "one opening")
        ha.publish(f"{BASE}/command", "call sip:evil@198.51.100.7")
        ha.publish(f"{BASE}/command", b"\xff" * 300)
        wait_for(lambda: box.status()["events"]["mqtt"]["commands_refused"] == 3, 10, 0.1,
                 "two malformed commands refused")
        # commands off: the box does not even listen
        ha.publish("intercom/door2/command", "open_door")
        assert off.status()["events"]["mqtt"]["commands"] == 0
        # a door code lockout holds against MQTT as against DTMF (a lockout file that cannot
        # be read fails closed: locked for calls.door_code_lockout)
        (tmp_path / "locked").mkdir()
        (tmp_path / "locked" / "door-lockout.json").write_text("not json")
        locked = start_box(tmp_path / "locked", **mqtt_section(
            broker, name="door3", username="door3", password=USERS["door3"],
            allow_commands=True))
        locked.wait_state("idle")
        wait_for(lambda: locked.status()["events"]["mqtt"]["connected"], 15, 0.1, "door3 up")
        ha.publish("intercom/door3/command", "open_door")
        refused = ha.wait_event("intercom/door3", "command", command="open_door")
        assert refused["accepted"] is False and "locked" in refused["reason"]
        assert locked.status()["door_openings"] == 0
        assert off.status()["door_openings"] == 0
        assert box.status()["door_openings"] == 1, "the guest's and the box's own were dropped"
    finally:
        for b in (box, off, locked):
            if b is not None:
                b.stop()
        for client in (ha, guest, box_user):
            client.stop()
    assert "MQTT command open_door: done" in box.log()


def test_a_broker_certificate_from_another_ca_is_one_clear_error(
        tmp_path: Path, broker: Mosquitto) -> None:
    other = local_ca(tmp_path / "other-ca")
    box = start_box(tmp_path / "box", **mqtt_section(broker, ca_file=str(other.ca)))
    try:
        box.wait_state("idle")
        mqtt = wait_for(lambda: box.status()["events"]["mqtt"]["error"] and
                        box.status()["events"]["mqtt"], 15, 0.2, "the MQTT error")
        assert "certificate is not trusted" in mqtt["error"], mqtt
        assert mqtt["connected"] is False
        lines = [line for line in box.log().splitlines() if "certificate is not trusted" in line]
        assert len(lines) == 1, "one line, not one per retry"
        assert "Traceback" not in box.log()
    finally:
        box.stop()


def test_commands_over_plain_tcp_are_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "intercom.yaml"
    config.write_text(json.dumps({"sip": {"server": "127.0.0.1", "username": "5002"},
                                  "mqtt": {"host": "127.0.0.1", "tls": False,
                                           "allow_commands": True}}))
    r = subprocess.run([sys.executable, "-m", "firmware", "check-config", str(config)],
                       capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "mqtt.allow_commands" in lines[0] and "mqtt.tls" in lines[0]


class HostileBroker:
    """Accepts the box's MQTT connection, says CONNACK, then announces a 200 MB PUBLISH and
    streams junk: how much it got to send before the box hung up is ``sent``."""

    ANNOUNCED = 200_000_000

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.sent = 0
        self.closed_by_box = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        conn.recv(4096)  # CONNECT
        conn.sendall(b"\x20\x02\x00\x00")  # CONNACK: accepted
        n, length = self.ANNOUNCED, bytearray()
        while True:
            byte, n = n % 128, n // 128
            length.append(byte | (0x80 if n else 0))
            if not n:
                break
        conn.sendall(b"\x30" + bytes(length) + b"\x00\x01t")
        chunk = b"x" * 65536
        try:
            while self.sent < 50_000_000:
                conn.sendall(chunk)
                self.sent += len(chunk)
        except OSError:
            self.closed_by_box.set()
        finally:
            conn.close()


def test_a_hostile_broker_announcing_a_huge_packet_is_cut_off(tmp_path: Path) -> None:
    hostile = HostileBroker()
    box = start_box(tmp_path / "box", host="127.0.0.1", port=hostile.port, tls=False,
                    name=NAME)
    try:
        box.wait_state("idle")
        mqtt = wait_for(lambda: (m := box.status()["events"]["mqtt"])["oversized"] and m, 15,
                        0.1, "the oversized packet refused")
        assert f"packet of {HostileBroker.ANNOUNCED} bytes" in mqtt["error"]
        assert hostile.closed_by_box.wait(10), "the box hung up"
        assert hostile.sent < 8_000_000, f"the box kept reading: {hostile.sent} bytes"
        assert box.cmd("open-door")["ok"] is True, "the box still does its job"
    finally:
        box.stop()
