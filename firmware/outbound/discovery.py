"""Home Assistant MQTT discovery: the retained config messages that make the box one device in
Home Assistant (``<discovery prefix>/<component>/<node>/<object>/config``): a doorbell ``event``
entity, binary sensors (registered, in call, door open), a call-state sensor and, only when
MQTT commands are allowed, a ``button`` that opens the door.

Owns the entities, their names and templates, following Home Assistant's documented discovery
schema (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery). Pure: builds topics
and dictionaries; must not know the broker client nor how the state is gathered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..supervisor import STATES

DOORBELL_EVENT = "press"  # the event type of the doorbell entity


@dataclass(frozen=True)
class Topics:
    """The box's topics, all under ``<prefix>/<name>``."""

    base: str
    command: str

    @property
    def availability(self) -> str:
        return f"{self.base}/status"  # online / offline (the Last Will)

    @property
    def state(self) -> str:
        return f"{self.base}/state"  # retained JSON

    @property
    def events(self) -> str:
        return f"{self.base}/events"  # one JSON object per event

    @property
    def recent(self) -> str:
        return f"{self.base}/events/recent"  # retained: the last N events

    @property
    def doorbell(self) -> str:
        return f"{self.base}/doorbell"  # {"event_type": "press", "button": ...}


def node_id(name: str) -> str:
    """The discovery node id: Home Assistant allows [a-zA-Z0-9_-] only."""
    return "intercom_" + re.sub(r"[^A-Za-z0-9_-]", "_", name)


def configs(topics: Topics, name: str, version: str, discovery_prefix: str,
            allow_commands: bool) -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload) of every entity; a removed entity (the door button when commands are
    off) gets an empty payload from ``removed``."""
    node = node_id(name)
    device = {"identifiers": [node], "name": f"Door intercom {name}",
              "manufacturer": "intercom-firmware", "model": "Raspberry Pi SIP door intercom",
              "sw_version": version}
    common = {"device": device, "availability_topic": topics.availability,
              "payload_available": "online", "payload_not_available": "offline"}

    def entity(component: str, obj: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        payload = {**common, "unique_id": f"{node}_{obj}", "object_id": f"{node}_{obj}",
                   **fields}
        return f"{discovery_prefix}/{component}/{node}/{obj}/config", payload

    def flag(key: str) -> str:
        return "{{ 'ON' if value_json." + key + " else 'OFF' }}"

    out = [
        entity("event", "doorbell", name="Doorbell", state_topic=topics.doorbell,
               event_types=[DOORBELL_EVENT], device_class="doorbell"),
        entity("binary_sensor", "registered", name="Registered", state_topic=topics.state,
               value_template=flag("registered"), device_class="connectivity",
               entity_category="diagnostic"),
        entity("binary_sensor", "in_call", name="In call", state_topic=topics.state,
               value_template=flag("in_call")),
        entity("binary_sensor", "door_open", name="Door open", state_topic=topics.state,
               value_template=flag("door_open"), device_class="door"),
        entity("sensor", "call_state", name="Call state", state_topic=topics.state,
               value_template="{{ value_json.state }}", device_class="enum",
               options=list(STATES)),
    ]
    if allow_commands:
        out.append(entity("button", "open_door", name="Open door",
                          command_topic=topics.command, payload_press="open_door"))
    return out


def removed(name: str, discovery_prefix: str, allow_commands: bool) -> list[str]:
    """Config topics to clear (an empty retained payload deletes an entity in Home
    Assistant): the door button of a box whose commands were switched off."""
    if allow_commands:
        return []
    return [f"{discovery_prefix}/button/{node_id(name)}/open_door/config"]
