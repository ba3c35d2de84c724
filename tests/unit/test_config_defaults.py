"""One source of truth for defaults: the config dataclasses. The schema is derived from them,
and the image's defaults file only holds what the image changes."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

import yaml

from firmware import config as c

REPO = Path(__file__).resolve().parents[2]
IMAGE_DEFAULTS = REPO / "images" / "overlay" / "etc" / "intercom" / "defaults.yaml"
MINIMAL = "sip:\n  server: pbx.local\n  username: 5002\n"


def test_schema_has_exactly_the_dataclass_fields() -> None:
    for section, cls in c._SECTION_TYPES.items():
        names = [f.name for f in fields(cls) if not f.metadata.get("derived")]
        assert list(c.SCHEMA[section]) == names, section
        for f in fields(cls):
            if f.metadata.get("derived"):  # computed from other keys (sip.servers)
                continue
            required = c.SCHEMA[section][f.name][2]
            assert required == (f.default is MISSING and f.default_factory is MISSING)


def test_unset_keys_take_the_dataclass_defaults() -> None:
    cfg = c.parse_config(MINIMAL)
    for section, cls in c._SECTION_TYPES.items():
        loaded = getattr(cfg, section)
        for f in fields(cls):
            if f.default is MISSING or f.metadata.get("derived") or \
                    (section, f.name) in (("media", "srtp"),
                                                             ("gpio", "buttons"),
                                                             ("gpio", "leds"),
                                                             ("gpio", "relay")):
                continue  # required, transport-dependent, or from the board profile
            assert getattr(loaded, f.name) == f.default, f"{section}.{f.name}"


def test_board_profile_items_take_the_spec_defaults() -> None:
    cfg = c.parse_config(MINIMAL + "gpio:\n  relay: {pin: 26}\n")
    button = next(b for b in cfg.gpio.buttons if b.name == "call")
    assert (button.active_high, button.pull_up, button.bounce_ms, button.hold_s) == (
        c.ButtonSpec.active_high, c.ButtonSpec.pull_up, c.ButtonSpec.bounce_ms,
        c.ButtonSpec.hold_s)
    assert cfg.gpio.relay is not None and cfg.gpio.relay.seconds == c.RelaySpec.seconds
    assert all(led.active_high == c.LedSpec.active_high for led in cfg.gpio.leds)


def test_image_defaults_only_change_what_the_image_needs() -> None:
    data = yaml.safe_load(IMAGE_DEFAULTS.read_text())
    assert c.load_defaults(IMAGE_DEFAULTS) == data, "the defaults file validates"
    cfg = c.parse_config(MINIMAL, defaults=data)
    for section, values in data.items():
        default = c._SECTION_TYPES[section]()
        for key, value in values.items():
            assert getattr(cfg, section).__getattribute__(key) == value
            assert getattr(default, key) != value, (
                f"{section}.{key} in {IMAGE_DEFAULTS.name} repeats the built-in default: "
                "remove it (the dataclass in firmware/config.py is the one source)")
