"""Unit-test rules: the registration's random spread pinned to none, so that the virtual-clock
tests can name the exact second of each refresh, retry and keep-alive. The tests of the spread
itself (``test_registration_spread.py``) give each registration its own source."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from firmware.sip import registration


@pytest.fixture(autouse=True)
def no_spread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(registration, "SPREAD_SOURCE", lambda: 0.0)
    yield
