"""The one configuration builder for a box under test: the YAML document (written as JSON,
which is YAML) every harness starts from, whether the box runs as a process, in-process on
simulated pins or on fakes. Knows the keys, not how the box is run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..asterisk import PASSWORDS
from ..loopback import free_port

# against a real Asterisk: refresh within a minute, retry within seconds
LIVE_SIP = {"display_name": "Door", "register_expires": 60, "retry_min": 1, "retry_max": 4}


def box_config(folder: Path, pbx_port: int, **sections: dict[str, Any]) -> dict[str, Any]:
    """Extension 5002 of ``pbx_port`` on 127.0.0.1 (its password from ``pbx/``), a free SIP
    port, the control socket in ``folder``, RTP on any port, simulated pins; each keyword
    section (``sip``, ``calls``, ``audio``, ...) is merged over these, key by key."""
    doc: dict[str, Any] = {
        "sip": {"server": "127.0.0.1", "port": pbx_port, "username": "5002",
                "password": PASSWORDS["5002"], "local_port": free_port()},
        "control": {"socket": str(folder / "control.sock")},
        "media": {"rtp_port": 0},
        "gpio": {"pin_factory": "mock"},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return doc


def write_config(folder: Path, pbx_port: int, **sections: dict[str, Any]) -> Path:
    """``box_config`` written to ``folder/intercom.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "intercom.yaml"
    path.write_text(json.dumps(box_config(folder, pbx_port, **sections)))
    return path


def config_text(folder: Path, pbx_port: int, **sections: dict[str, Any]) -> str:
    """``box_config`` as the YAML text ``firmware.config.parse_config`` reads."""
    return json.dumps(box_config(folder, pbx_port, **sections))
