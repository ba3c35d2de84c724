"""RFC 4733 keys wake the application: the GIL-free media loop writes to the session's eventfd
when it queues a received key, so asyncio can watch it (add_reader) instead of polling."""

from __future__ import annotations

import asyncio
import select
import threading

import pytest

from firmware.events import MediaParams
from firmware.media.audio import NullSink, SilenceSource
from firmware.media.stream import RtpPorts, RtpSession

pytestmark = pytest.mark.integration


def params(port: int) -> MediaParams:
    return MediaParams("127.0.0.1", port, 0, "PCMU", 101, 20, "sendrecv")


def test_a_received_key_makes_the_digit_fd_readable() -> None:
    pa, pb = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    a = RtpSession(pa, SilenceSource(), NullSink())
    b = RtpSession(pb, SilenceSource(), NullSink())
    try:
        a.start(params(pb.port))
        b.start(params(pa.port))
        fd = b.digit_fd
        assert select.select([fd], [], [], 0.5)[0] == [], "no key yet: nothing to read"
        assert a.send_dtmf("7") == 1
        assert select.select([fd], [], [], 5.0)[0] == [fd], "the key did not wake the reader"
        assert b.received_digits() == "7"
        assert select.select([fd], [], [], 0)[0] == [], "draining cleared the wake-up"

        async def wait_for_keys() -> str:
            loop = asyncio.get_running_loop()
            got: asyncio.Future[str] = loop.create_future()
            loop.add_reader(fd, lambda: got.done() or got.set_result(b.received_digits()))
            try:
                a.send_dtmf("#")
                return await asyncio.wait_for(got, 5.0)
            finally:
                loop.remove_reader(fd)

        # a loop of its own, on a thread of its own: earlier tests in the same process (the
        # browser tests' Playwright) may leave an event loop running on this thread
        heard: list[str] = []
        worker = threading.Thread(target=lambda: heard.append(asyncio.run(wait_for_keys())))
        worker.start()
        worker.join(10)
        assert heard == ["#"]
    finally:
        a.stop()
        b.stop()
        pa.close()
        pb.close()
    assert b.digit_fd == -1, "the fd is closed with the session"
