"""Mosquitto (Debian ``mosquitto``) on loopback for tests, benchmarks and ``./build.sh run``: a
TLS listener with a certificate from a test CA (``devtools.certificate``), optionally a plain
listener, a password file (``mosquitto_passwd``) and an ACL (the shipped
``pbx/mosquitto-acl.conf`` by default), no persistence: a restart forgets every retained
message, so what is retained afterwards was sent again. ``Listener`` is a test's own client
(paho-mqtt) that records every message with its retain flag."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from .certificate import WebCertificate, web_certificate
from .loopback import free_port
from .paths import REPO
from .waiting import wait_for

ACL = REPO / "pbx" / "mosquitto-acl.conf"


def local_ca(folder: Path) -> WebCertificate:
    """A CA and a server certificate for 127.0.0.1/localhost in ``folder``."""
    return web_certificate(["localhost", "127.0.0.1"], folder)


class Mosquitto:
    """``users``: name -> password (none: anonymous allowed); ``tls``: the broker's
    certificate (None: no TLS listener); ``plain``: a plain TCP listener too (on
    ``plain_port``, default a free one)."""

    def __init__(self, folder: Path, tls: WebCertificate | None = None,
                 users: dict[str, str] | None = None, acl: Path | None = ACL,
                 plain: bool = False, plain_port: int | None = None) -> None:
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.tls, self.users = tls, users or {}
        self.acl = acl if self.users else None
        self.tls_port = free_port(socket.SOCK_STREAM) if tls else None
        self.plain_port = plain_port or (free_port(socket.SOCK_STREAM) if plain or not tls
                                         else None)
        self.log_path = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        self._write()

    def _write(self) -> None:
        lines = ["per_listener_settings false", "persistence false", "user root",
                 f"log_dest file {self.log_path}", "log_type all", "connection_messages true"]
        if self.users:
            passwd = self.dir / "passwd"
            passwd.write_text("")
            for name, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), name, password],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines += ["allow_anonymous true"]
        if self.acl is not None:
            lines.append(f"acl_file {self.acl}")
        if self.tls_port:
            assert self.tls is not None
            lines += [f"listener {self.tls_port} 127.0.0.1", f"certfile {self.tls.cert}",
                      f"keyfile {self.tls.key}"]
        if self.plain_port:
            lines += [f"listener {self.plain_port} 127.0.0.1"]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port = self.tls_port or self.plain_port
        wait_for(lambda: self._listening(port) or self.proc.poll() is not None, 10, 0.05,
                 "mosquitto to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto did not start: {self.proc.stderr.read()!r} "
                               f"{self.log()[-2000:]}")
        return self

    @staticmethod
    def _listening(port: int | None) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port or 0), 0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> Mosquitto:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def listener(self, user: str | None = None, topic: str = "#") -> Listener:
        assert self.tls is not None or self.plain_port
        return Listener(self, user, topic).start()


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Listener:
    """A test's MQTT client on the broker (TLS when the broker has it), recording messages."""

    def __init__(self, broker: Mosquitto, user: str | None, topic: str) -> None:
        self.broker, self.topic = broker, topic
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                  client_id=f"test-{time.monotonic_ns()}")
        if user is not None:
            self.client.username_pw_set(user, broker.users[user])
        if broker.tls is not None:
            self.client.tls_set_context(ssl.create_default_context(cafile=str(broker.tls.ca)))
        self.client.on_connect = lambda c, u, f, rc, p: (c.subscribe(self.topic, qos=1),
                                                         self._ready.set())
        self.client.on_message = self._on_message

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self) -> Listener:
        port = self.broker.tls_port or self.broker.plain_port
        self.client.connect("127.0.0.1", port or 0, 30)
        self.client.loop_start()
        assert self._ready.wait(10), "the test's MQTT client did not connect"
        time.sleep(0.3)  # the SUBACK, and the retained messages it releases
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def events(self, base: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.on(f"{base}/events")]

    def wait_event(self, base: str, kind: str, timeout: float = 15, **fields: Any
                   ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for event in self.events(base):
                if event["kind"] == kind and all(event.get(k) == v for k, v in fields.items()):
                    return event
            return None
        return wait_for(found, timeout, 0.05, f"MQTT event {kind} {fields or ''}")

    def last(self, topic: str) -> Message | None:
        found = self.on(topic)
        return found[-1] if found else None
