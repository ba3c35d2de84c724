"""Fixtures shared by the integration and browser tests: the in-process box and baresip
phones, each started against the ``asterisk`` fixture of the calling test's folder and stopped
after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.components import Asterisk, Baresip

from .appliance_box import Box


@pytest.fixture
def box(tmp_path: Path, asterisk: Asterisk) -> Iterator[Callable[..., Box]]:
    boxes: list[Box] = []

    def make(**extra: Any) -> Box:
        b = Box(tmp_path / f"box{len(boxes)}", asterisk.port, **extra)
        boxes.append(b)
        return b

    yield make
    for b in boxes:
        b.stop()


@pytest.fixture
def baresip(tmp_path: Path, asterisk: Asterisk) -> Iterator[Callable[..., Baresip]]:
    started: list[Baresip] = []

    def make(ext: str = "5001", **kw: Any) -> Baresip:
        phone = Baresip(asterisk, ext, tmp=tmp_path / f"baresip-{ext}-{len(started)}", **kw)
        started.append(phone)
        return phone.start()

    yield make
    for phone in started:
        phone.stop()
