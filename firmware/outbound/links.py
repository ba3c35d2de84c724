"""The network consumers of the Outbox, opened from the configuration: MQTT (``mqtt.host``)
and one webhook per ``webhooks.urls`` entry. Each runs on its own thread behind a bounded
queue; opening one starts its thread and returns at once (a broker that is down is the
thread's problem, never the start's).

Owns which consumers a configuration asks for, their start and stop, and their joint report
for the status. Must not know the events' meaning nor the transports' details.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .. import __version__
from ..config import Config
from ..update.slots import UNKNOWN, installed_version
from . import Outbox
from .webhook import Webhook

if TYPE_CHECKING:
    from .mqtt import Command, MqttLink

log = logging.getLogger("intercom")


class Poster(Protocol):
    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Any: ...


class Links:
    def __init__(self, mqtt: MqttLink | None, webhooks: list[Webhook],
                 unsubscribe: list[Callable[[], None]]) -> None:
        self.mqtt, self.webhooks, self._unsubscribe = mqtt, webhooks, unsubscribe

    def close(self) -> None:
        for undo in self._unsubscribe:
            undo()
        if self.mqtt is not None:
            self.mqtt.close()
        for hook in self.webhooks:
            hook.close()

    def report(self) -> dict[str, Any]:
        return {"mqtt": self.mqtt.report() if self.mqtt else None,
                "webhooks": [hook.report() for hook in self.webhooks]}


def box_name(cfg: Config) -> str:
    """The name in the box's topics and payloads: mqtt.name, else system.hostname."""
    return cfg.mqtt.name or cfg.system.hostname


def open_links(cfg: Config, outbox: Outbox, loop: Poster, command: Command) -> Links:
    """Subscribe and start what ``cfg`` asks for; ``command`` runs an MQTT command on the
    event loop (``loop``)."""
    name = box_name(cfg)
    mqtt = None
    undo: list[Callable[[], None]] = []
    if cfg.mqtt.host:
        try:  # paho-mqtt: Debian's python3-paho-mqtt on the image
            from .mqtt import MqttLink
        except ImportError as exc:
            log.error("mqtt.host is set but the MQTT client is missing (%s): no MQTT", exc)
            return Links(None, [], [])
        release = installed_version()
        mqtt = MqttLink(cfg.mqtt, name, __version__ if release == UNKNOWN else release,
                        loop.call_soon_threadsafe, command)
        undo.append(outbox.subscribe(mqtt))
        mqtt.start()
    hooks = [Webhook(url, cfg.webhooks, name) for url in cfg.webhooks.urls]
    for hook in hooks:
        undo.append(outbox.subscribe(hook))
        hook.start()
    return Links(mqtt, hooks, undo)
