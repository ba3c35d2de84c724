"""Fixtures for the reception console in a real Chromium: an Asterisk 22 with its HTTP server
(SIP over ws:// on loopback, the console's files from web/), the door box in-process with
gpiozero's MockFactory and the ALSA file plugin, and the console page logged in as 5004."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from devtools.asterisk import PASSWORDS, Asterisk
from devtools.chromium import Chromium
from devtools.console_page import ConsolePage
from devtools.loopback import free_port

from ..integration import alsa_env  # noqa: F401 - sets ALSA_CONFIG_PATH before alsa-lib loads
from ..integration.conftest import baresip, box  # noqa: F401 - the same fixtures, this asterisk

CONSOLE_TONE_HZ = 1000  # what Chromium's fake microphone plays


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    browser = Chromium(tmp_path_factory.mktemp("chromium"), mic_hz=CONSOLE_TONE_HZ)
    try:
        yield browser.start()
    finally:
        browser.stop()


@pytest.fixture
def asterisk(request: pytest.FixtureRequest) -> Iterator[Asterisk]:
    pbx = Asterisk(http_port=free_port(socket.SOCK_STREAM))
    try:
        yield pbx.start()
    finally:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(pbx.log_text()[-6000:])
        pbx.cleanup()


@pytest.fixture
def console(chromium: Chromium, asterisk: Asterisk,
            request: pytest.FixtureRequest) -> Iterator[Callable[..., ConsolePage]]:
    pages: list[ConsolePage] = []

    def make(login: bool = True, **params: str) -> ConsolePage:
        page = ConsolePage(chromium, asterisk)
        pages.append(page)
        if login:
            page.open(**{"server": asterisk.ws_url, "user": "5004",
                         "password": PASSWORDS["5004"], "door": "5002", "code": "*1",
                         **params})
        return page

    yield make
    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
    for page in pages:
        if failed:
            print("\n".join(page.log[-60:]))
        page.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
