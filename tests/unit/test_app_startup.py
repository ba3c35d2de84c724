"""App's start-up refusals, on the fakes (``devtools.box.fakes``): each cause stops the start
with one line naming it, and nothing after the failing step is opened."""

from __future__ import annotations

import errno

import pytest

from devtools.box.fakes import FakeBox, run
from firmware.net import TransportUnusableError
from firmware.startup import StartupError


def refusal(box: FakeBox) -> str:
    async def scenario() -> str:
        with pytest.raises(StartupError) as refused:
            await box.app.start()
        return str(refused.value)

    return str(run(scenario()))


def test_a_second_intercom_is_refused_while_the_first_answers_on_the_socket() -> None:
    box = FakeBox()
    box.controls.running = True
    path = box.app.cfg.control.socket
    assert refusal(box) == f"another intercom is already running (its control socket {path} " \
                           f"answers)"
    assert box.app.transport is None and box.controls.server_ is None, "nothing was opened"


def test_an_unresolvable_server_names_the_setting() -> None:
    box = FakeBox()
    box.net.unresolvable = OSError("Name or service not known")
    server = box.app.cfg.sip.server
    assert refusal(box) == f"cannot resolve sip.server {server!r}: Name or service not known"
    assert box.app.transport is None and box.app.ua is None


def test_an_unusable_transport_is_refused_in_the_adapters_words() -> None:
    box = FakeBox()
    box.net.unusable = TransportUnusableError("sip.port 5060 is taken on 0.0.0.0")
    assert refusal(box) == "sip.port 5060 is taken on 0.0.0.0"
    assert box.app.ua is None and box.boards.board is None


def test_a_taken_rtp_port_names_the_setting() -> None:
    box = FakeBox()
    box.media.port_taken = OSError(errno.EADDRINUSE, "no free RTP port pair from 40000")
    assert refusal(box).endswith("no free RTP port pair from 40000 (media.rtp_port)")
    assert box.boards.board is None and box.controls.server_ is None


def test_a_control_socket_that_cannot_be_created_is_named() -> None:
    box = FakeBox()
    box.controls.refused = PermissionError(errno.EACCES, "Permission denied")
    path = box.app.cfg.control.socket
    assert refusal(box) == f"cannot create the control socket {path}: Permission denied"
    assert box.net.transport.sent == [], "the user agent never started: no REGISTER left"
