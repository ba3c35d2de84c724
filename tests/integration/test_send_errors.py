"""A send error costs one datagram, over real sockets on loopback: the whole box (in-process,
pins simulated) registered with a real Asterisk on 127.0.0.1. A datagram over 65,507 bytes
gets EMSGSIZE from the kernel for real; it used to be taken for "the PBX is down" and abort
every transaction to it, the REGISTER in flight included (sent once a second, an attacker made
the box lose its registration ~20 times a minute). And requests crafted so that the reply
could not fit a datagram are answered 513 from a bounded scan, or not at all."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from devtools.waiting import wait_for

pytestmark = pytest.mark.integration
SBC = "127.0.0.3"  # a trusted source besides the registrar


def _on_loop(b, fn):  # noqa: ANN001, ANN202 - run ``fn`` on the box's event loop thread
    async def call():  # noqa: ANN202
        return fn()
    return b._call(call())


def test_emsgsize_costs_one_datagram_not_the_register_in_flight(asterisk, box) -> None:
    b = box()
    wait_for(lambda: b.status()["registered"], 15, 0.1, "registration")
    led = b.pin("registered")
    since = len(led.states)
    app = b.app

    def provoke() -> tuple[object, bool]:
        ua, driver = app.ua, app.driver
        ua.reg.restart(driver.now())  # a REGISTER goes out now: its transaction is open ...
        driver.flush()
        (register,) = [tx for tx in ua._client.values()
                       if tx.request.method == "REGISTER" and tx.last_response is None]
        # ... when a datagram too large for UDP is refused by the kernel (EMSGSIZE)
        app.transport.send(b"x" * 70_000, ua.server_addr)
        driver.flush()
        return register, register.terminated

    register, aborted = _on_loop(b, provoke)
    assert not aborted, "the REGISTER transaction is still open"
    wait_for(lambda: register.last_response is not None, 10, 0.05, "the REGISTER answered")
    assert register.last_response.status == 200
    st = b.status()
    assert st["registered"] and st["counters"]["send_failed_too_large"] == 1
    assert "transport_errors" not in st["counters"] and st["last_error"] is None
    assert all(state for _, state in led.states[since:]), "the registered LED never went off"
    assert asterisk.registered("5002")


def _options(box_port: int, src: str, src_port: int, vias: int, via_len: int,
             pad: int = 0) -> bytes:
    tag = uuid.uuid4().hex
    head = [f"OPTIONS sip:5002@127.0.0.1:{box_port} SIP/2.0",
            f"Via: SIP/2.0/UDP {src}:{src_port};rport;branch=z9hG4bK{tag}"]
    head += [f"Via: SIP/2.0/UDP 10.0.0.{i % 250}:5060;branch=z9hG4bK{i}{'p' * via_len}"
             for i in range(vias)]
    head += ["Max-Forwards: 70", f"From: <sip:sbc@{src}>;tag={tag[:8]}",
             "To: <sip:5002@127.0.0.1>", f"Call-ID: {tag}", "CSeq: 1 OPTIONS"]
    head += [f"X-Pad: {'p' * pad}"] if pad else []
    head.append("Content-Length: 0")
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def test_requests_whose_reply_would_not_fit_cost_the_registration_nothing(asterisk, box) -> None:
    """The attack of issue #23 from a trusted source, once a second for a few seconds while the
    box re-registers every 2 s: requests of 60 KB whose 200 would exceed a datagram (what used
    to make ``sendto`` fail: too many Vias to echo, so nothing), and 20 KB ones (513). The
    registration holds."""
    b = box(sip={"trusted_sources": [SBC], "register_expires": 60})
    wait_for(lambda: b.status()["registered"], 15, 0.1, "registration")
    led = b.pin("registered")
    since = len(led.states)
    port = b.app.cfg.sip.local_port
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((SBC, 0))
    s.settimeout(2)
    replies = []
    try:
        for _ in range(4):
            _on_loop(b, lambda: (b.app.ua.reg.restart(b.app.driver.now()), b.app.driver.flush()))
            for data in (_options(port, SBC, s.getsockname()[1], 110, 520),  # ~60 KB, 111 Vias
                         _options(port, SBC, s.getsockname()[1], 2, 20, 20_000)):
                assert len(data) > 8192
                s.sendto(data, ("127.0.0.1", port))
            try:
                replies.append(s.recv(65535))
            except TimeoutError:
                pass
            time.sleep(0.5)
    finally:
        s.close()
    st = b.status()
    assert st["counters"]["rejected_too_large"] == 8, st["counters"]
    assert len(replies) == 4
    assert all(r.startswith(b"SIP/2.0 513 Message Too Large\r\n") for r in replies)
    assert not any(k.startswith("send_failed") for k in st["counters"]), st["counters"]
    assert st["registered"] and "transport_errors" not in st["counters"]
    assert all(state for _, state in led.states[since:]), "the registered LED never went off"
    assert b.app.ua.budget.held(SBC) == 0, "nothing of theirs was stored"
