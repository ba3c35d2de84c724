"""Fixtures that start the real peers (Asterisk 22, baresip) and the intercom itself: as a
process (``intercom``) or in-process with simulated pins (``box``). The browser tests reuse
``box`` and ``baresip`` against their own ``asterisk``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.asterisk import Asterisk
from devtools.baresip import Baresip
from devtools.box.in_process import Box
from devtools.box.process import Intercom

from . import alsa_env  # noqa: F401 - sets ALSA_CONFIG_PATH before alsa-lib loads


@pytest.fixture
def asterisk(request: pytest.FixtureRequest) -> Iterator[Asterisk]:
    direct = request.node.get_closest_marker("direct_media") is not None
    pbx = Asterisk(direct_media=direct)
    try:
        yield pbx.start()
    finally:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(pbx.log_text()[-4000:])
        pbx.cleanup()


@pytest.fixture
def intercom(tmp_path: Path, asterisk: Asterisk) -> Iterator[Callable[..., Intercom]]:
    started: list[Intercom] = []

    def make(**sip: Any) -> Intercom:
        box = Intercom(tmp_path / f"box{len(started)}", asterisk.port, **sip)
        started.append(box)
        return box.start()

    yield make
    for box in started:
        box.stop()


@pytest.fixture
def box(tmp_path: Path, asterisk: Asterisk) -> Iterator[Callable[..., Box]]:
    """The application in-process against the calling test's ``asterisk``."""
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
    """baresip phones registered to the calling test's ``asterisk``."""
    started: list[Baresip] = []

    def make(ext: str = "5001", **kw: Any) -> Baresip:
        phone = Baresip(asterisk, ext, tmp=tmp_path / f"baresip-{ext}-{len(started)}", **kw)
        started.append(phone)
        return phone.start()

    yield make
    for phone in started:
        phone.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def settle(seconds: float) -> None:
    time.sleep(seconds)
