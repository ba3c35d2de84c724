"""MQTT out (and, only where safe, commands in) with paho-mqtt, on a thread of its own.

The Outbox hands each event to ``MqttLink`` on the event loop, which only appends it to a
bounded queue (the oldest dropped and counted) and writes one byte to wake the thread: a
dead, slow or hostile broker never delays a call, a button, the relay or the media loop.
The thread connects (TLS always verifies the broker's certificate), reconnects with backoff,
drives paho's documented external-loop API (``loop_read``/``loop_write``/``loop_misc``) and
publishes: ``<prefix>/<name>/status`` online/offline (retained; "offline" is the Last Will),
``.../state`` (retained JSON), ``.../events`` (JSON per event), ``.../doorbell`` (Home
Assistant's event entity), ``.../events/recent`` (retained backlog of the last N events) and
Home Assistant's discovery configs (``firmware.outbound.discovery``).

Commands (``open_door``, ``call TARGET``, ``hangup``) are heard only with ``mqtt.allow_commands``
over TLS, only on the command topic, never from a retained message, at most 5 per 10 s; each
runs on the event loop through ``firmware.commands`` (the supervisor's lockout and relay rules)
and becomes a command event there. Supports paho-mqtt 1.6 (Debian bookworm) and 2.x (trixie,
PyPI). Owns the topics, the connection, the queue and their counters; must not know what an
event means nor how a command is carried out. The password never reaches a log or the status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from ..config import MqttSettings
from . import discovery
from .event import Event, Kind

log = logging.getLogger("intercom")

BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0
MAX_COMMAND = 256  # bytes: a longer command message is refused
MAX_INCOMING = 64 * 1024  # bytes: a larger packet from the broker ends the connection
COMMAND_BURST, COMMAND_WINDOW = 5, 10.0  # at most 5 commands in 10 s
_TARGET = re.compile(r"[0-9A-Za-z*#+._-]{1,32}")
_COMMANDS = ("open_door", "call", "hangup")

Post = Callable[[Callable[[], None]], object]  # run a function on the event loop
Command = Callable[[dict[str, Any]], dict[str, Any]]


def parse_command(payload: bytes) -> dict[str, Any] | str:
    """A command message -> the control request (``{"cmd": ...}``), or why it is refused.
    Text (``open_door``, ``call 5001``, ``hangup``) or JSON (``{"command": "call",
    "target": "5001"}``)."""
    if len(payload) > MAX_COMMAND:
        return f"longer than {MAX_COMMAND} bytes"
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "not UTF-8"
    target: Any = None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return "not valid JSON"
        if not isinstance(data, dict):
            return "not a JSON object"
        name, target = data.get("command"), data.get("target")
    else:
        name, _, rest = text.partition(" ")
        target = rest.strip() or None
    if name not in _COMMANDS:
        return "unknown command (open_door, call TARGET, hangup)"
    if name != "call":
        return {"cmd": name} if target is None else f"{name} takes no argument"
    if target is None:
        return {"cmd": "call"}
    if not isinstance(target, str) or not _TARGET.fullmatch(target):
        return "call TARGET must be 1-32 of 0-9 A-Z a-z * # + . _ -"
    return {"cmd": "call", "target": target}


class _BoundedClient(paho.Client):
    """paho's client, refusing an incoming packet larger than ``MAX_INCOMING`` before reading
    it: paho itself would buffer whatever size a hostile broker announces (up to 256 MB).
    Looks at paho's packet state (private, the same in 1.6 and 2.x) and does nothing when that
    state is not there."""

    oversize = 0  # the size of the packet refused on this connection

    def _sock_recv(self, bufsize: int) -> bytes:
        packet = getattr(self, "_in_packet", None)
        if isinstance(packet, dict) and packet.get("have_remaining"):
            size = int(packet.get("remaining_length") or 0)
            if size > MAX_INCOMING:
                self.oversize = size
                # ConnectionError: what paho 1.6 and 2.x both turn into "connection lost"
                raise ConnectionError(f"packet of {size} bytes refused")
        return super()._sock_recv(bufsize)


def _new_client(client_id: str) -> _BoundedClient:
    if hasattr(paho, "CallbackAPIVersion"):  # paho-mqtt 2.x
        return _BoundedClient(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                              clean_session=True)
    return _BoundedClient(client_id=client_id, clean_session=True)  # 1.6


def _failed(code: Any) -> bool:
    failure = getattr(code, "is_failure", None)  # 2.x ReasonCode
    return bool(failure) if failure is not None else code != 0


def _reason(code: Any) -> str:
    return paho.connack_string(code) if isinstance(code, int) else str(code)


class MqttLink:
    """One broker connection: an Outbox consumer on the event loop, a thread for the rest."""

    def __init__(self, m: MqttSettings, name: str, version: str, post: Post,
                 command: Command) -> None:
        assert m.host is not None and m.port is not None
        self.settings, self.name, self.version = m, name, version
        base = f"{m.prefix}/{name}"
        self.topics = discovery.Topics(base, m.command_topic or f"{base}/command")
        self.commands_allowed = m.allow_commands and m.tls
        self._post, self._command = post, command
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, bytes, bool]] = deque()
        self._recent: deque[str] = deque(maxlen=m.recent or 1)
        self._state: bytes | None = None  # the retained state to (re)send
        self._state_sent = True
        self._recent_sent = True
        self._fresh = False  # connected: the birth, discovery and subscription are due
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._commands_at: deque[float] = deque()
        self.connected = False
        self.error: str | None = None
        self.counters = {"sent": 0, "dropped": 0, "connects": 0, "commands": 0,
                         "commands_refused": 0, "oversized": 0}

    # ------------------------------------------------------------ the event loop's side
    def __call__(self, event: Event) -> None:
        """The Outbox consumer: queue and wake the thread, nothing more."""
        data = {"box": self.name, **event.as_dict()}
        if event.kind is Kind.STATE:
            snapshot = dict(event.snapshot or {})
            with self._lock:
                self._state = json.dumps(snapshot, sort_keys=True).encode()
                self._state_sent = False
        else:
            text = json.dumps(data)
            with self._lock:
                self._push((self.topics.events, text.encode(), False))
                if event.kind is Kind.BUTTON_PRESSED:
                    bell = {"event_type": discovery.DOORBELL_EVENT, "button": event.button,
                            "target": event.target}
                    self._push((self.topics.doorbell, json.dumps(bell).encode(), False))
                if self.settings.recent:
                    self._recent.append(text)
                    self._recent_sent = False
        self._wake()

    def _push(self, item: tuple[str, bytes, bool]) -> None:
        if len(self._queue) >= self.settings.queue:
            self._queue.popleft()
            self.counters["dropped"] += 1
        self._queue.append(item)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: the thread is awake anyway
            self._wake_w.send(b"\0")

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        """Say "offline" (a clean stop is not a crash: no Last Will) and stop the thread."""
        self._stop.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._wake_r.close()
        self._wake_w.close()

    def report(self) -> dict[str, Any]:
        with self._lock:
            queued = len(self._queue)
        return {"connected": self.connected, "error": self.error, "queued": queued,
                "broker": f"{self.settings.host}:{self.settings.port}",
                "commands_allowed": self.commands_allowed, **self.counters}

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stop.is_set():
            client = self._client()
            try:
                client.connect(self.settings.host or "", self.settings.port or 0,
                               self.settings.keepalive)
            except ssl.SSLCertVerificationError as exc:
                self._problem(f"the broker's certificate is not trusted: "
                              f"{exc.verify_message} (mqtt.ca_file)")
            except ssl.SSLError as exc:
                self._problem(f"TLS with the broker failed: {exc.reason or exc}")
            except OSError as exc:
                self._problem(f"cannot reach the broker: {exc.strerror or exc}")
            except Exception as exc:  # never the end of the thread: retried with backoff
                self._problem(f"cannot connect: {exc}")
            else:
                try:
                    if self._serve(client):
                        backoff = BACKOFF_MIN
                except Exception as exc:
                    self._problem(f"the MQTT client failed: {exc}")
            self.connected = False
            if self._stop.is_set():
                break
            self._stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _client(self) -> _BoundedClient:
        m = self.settings
        client = _new_client(f"intercom-{self.name}")
        client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        if m.username:
            client.username_pw_set(m.username, m.password or None)
        if m.tls:
            client.tls_set_context(ssl.create_default_context(cafile=m.ca_file))
        client.max_queued_messages_set(m.queue)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        return client

    def _serve(self, client: _BoundedClient) -> bool:
        """Drive one connection until it ends; True when the broker accepted it."""
        accepted = False
        while True:
            sock = client.socket()
            if sock is None:
                return accepted
            if self._stop.is_set():
                self._goodbye(client)
                return accepted
            if self.connected:
                accepted = True
                self._flush(client)
            want = [sock] if client.want_write() else []
            try:
                readable, writable, _ = select.select([sock, self._wake_r], want, [], 1.0)
            except (OSError, ValueError):
                return accepted
            if self._wake_r in readable:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            try:
                rc = self._step(client, sock in readable, sock in writable)
            except Exception as exc:  # a paho surprise ends this connection, never the thread
                log.warning("MQTT: the client failed (%s): reconnecting", exc)
                rc = paho.MQTT_ERR_UNKNOWN
            if rc != paho.MQTT_ERR_SUCCESS:
                if client.oversize:
                    self.counters["oversized"] += 1
                    self._problem(f"the broker sent a packet of {client.oversize} bytes (at "
                                  f"most {MAX_INCOMING}): disconnected")
                elif self.connected:
                    self._problem(f"connection to the broker lost ({paho.error_string(rc)})")
                with contextlib.suppress(OSError):
                    client.disconnect()
                return accepted or self.connected

    @staticmethod
    def _step(client: _BoundedClient, readable: bool, writable: bool) -> int:
        rc = paho.MQTT_ERR_SUCCESS
        if readable:
            rc = client.loop_read()
        if rc == paho.MQTT_ERR_SUCCESS and writable:
            rc = client.loop_write()
        if rc == paho.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        return rc

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, code: Any,
                    *properties: Any) -> None:
        if _failed(code):
            self._problem(f"the broker refused the connection: {_reason(code)} "
                          "(mqtt.username, mqtt.password)")
            return
        if self.error is not None or not self.counters["connects"]:
            log.info("MQTT: connected to %s:%s as %s", self.settings.host, self.settings.port,
                     self.topics.base)
        self.counters["connects"] += 1
        self.error = None
        self.connected = True
        self._fresh = True

    def _flush(self, client: paho.Client) -> None:
        """Publish what is due; the lock is held only to take it (the event loop appends)."""
        if self._fresh:
            self._fresh = False
            self._birth(client)
        with self._lock:
            state = None if self._state_sent else self._state
            backlog = None if self._recent_sent else "[" + ",".join(self._recent) + "]"
            self._state_sent = self._recent_sent = True
            batch = list(self._queue)
            self._queue.clear()
        if state is not None:
            client.publish(self.topics.state, state, qos=1, retain=True)
        if backlog is not None:
            client.publish(self.topics.recent, backlog, qos=1, retain=True)
        for done, (topic, payload, retain) in enumerate(batch):
            if client.publish(topic, payload, qos=1, retain=retain).rc != paho.MQTT_ERR_SUCCESS:
                rest = batch[done:]  # paho's queue is full or the connection went: keep them
                with self._lock:
                    room = max(0, self.settings.queue - len(self._queue))
                    keep = rest[len(rest) - room:] if room < len(rest) else rest
                    self.counters["dropped"] += len(rest) - len(keep)
                    self._queue.extendleft(reversed(keep))
                return
            self.counters["sent"] += 1

    def _birth(self, client: paho.Client) -> None:
        m = self.settings
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        if m.discovery:
            for topic, payload in discovery.configs(self.topics, self.name, self.version,
                                                    m.discovery_prefix, self.commands_allowed):
                client.publish(topic, json.dumps(payload), qos=1, retain=True)
            for topic in discovery.removed(self.name, m.discovery_prefix,
                                           self.commands_allowed):
                client.publish(topic, b"", qos=1, retain=True)
        with self._lock:
            self._state_sent = self._state is None  # a restarted broker forgot it
            self._recent_sent = not self._recent
        if self.commands_allowed:
            client.subscribe(self.topics.command, qos=0)  # at most once: never a 2nd opening

    def _goodbye(self, client: paho.Client) -> None:
        if self.connected:
            client.publish(self.topics.availability, "offline", qos=1, retain=True)
            client.disconnect()
            end = time.monotonic() + 1.0
            while client.want_write() and time.monotonic() < end:
                if client.loop_write() != paho.MQTT_ERR_SUCCESS:
                    break
        self.connected = False

    def _on_message(self, client: paho.Client, userdata: Any, msg: Any) -> None:
        if not msg.payload:
            return  # an empty message clears a retained one: nothing was asked
        why: str | None = None
        if not self.commands_allowed or msg.topic != self.topics.command:
            why = "commands are off" if not self.commands_allowed else "not the command topic"
        elif msg.retain:
            why = "a retained command (it would repeat on every reconnect)"
        else:
            now = time.monotonic()
            while self._commands_at and now - self._commands_at[0] > COMMAND_WINDOW:
                self._commands_at.popleft()
            if len(self._commands_at) >= COMMAND_BURST:
                why = f"more than {COMMAND_BURST} commands in {COMMAND_WINDOW:.0f} s"
            else:
                self._commands_at.append(now)
        request = parse_command(bytes(msg.payload)) if why is None else why
        if isinstance(request, str):
            self.counters["commands_refused"] += 1
            log.warning("MQTT command on %s refused: %s", msg.topic, request)
            return
        self.counters["commands"] += 1
        self._post(lambda: self._execute(request))

    def _execute(self, request: dict[str, Any]) -> None:
        """On the event loop: the command through firmware.commands, logged."""
        reply = self._command(request)
        target = f" {request['target']}" if request.get("target") else ""
        if reply.get("ok"):
            log.info("MQTT command %s%s: done", request["cmd"], target)
        else:
            log.warning("MQTT command %s%s refused: %s", request["cmd"], target,
                        reply.get("error"))

    def _problem(self, why: str) -> None:
        if why != self.error:
            log.error("MQTT %s:%s: %s (retrying with backoff)", self.settings.host,
                      self.settings.port, why)
        self.error = why
        self.connected = False
