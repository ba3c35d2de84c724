"""The failover tests' site, written once: dnsmasq and two Asterisk 22 instances on their own
loopback addresses (127.0.0.11 primary, .12 secondary), the box as a process, the phones on
the PBXs; and the steps the UDP, TCP and TLS tests share (wait for the box at a server, stop
the primary and answer a call from the secondary). Everything started is stopped by
``Site.close``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devtools.asterisk import Asterisk
from devtools.baresip import Baresip
from devtools.box.process import Intercom
from devtools.dnsmasq import Dnsmasq
from devtools.waiting import wait_for

from ..audio import peak_hz, wav_array

PRIMARY, SECONDARY = "127.0.0.11", "127.0.0.12"


def registrar(box: Intercom) -> dict:
    return box.status().get("registrar") or {}


class Site:
    """Two PBXs (``pbx1`` preferred) and the DNS server naming them; ``records(pbx1, pbx2)``
    gives dnsmasq's options once the PBXs' ports are known. ``asterisk``: more Asterisk
    options for both (``sip_tls`` per PBX goes in ``tls1``/``tls2``)."""

    def __init__(self, tmp: Path, records: Callable[[Asterisk, Asterisk], list[str]],
                 rtp_base: int, tls1: tuple[Path, Path] | None = None,
                 tls2: tuple[Path, Path] | None = None, **asterisk: Any) -> None:
        self.tmp = tmp
        self.pbx1 = Asterisk(bind=PRIMARY, rtp_base=rtp_base, sip_tls=tls1, **asterisk)
        self.pbx2 = Asterisk(bind=SECONDARY, rtp_base=rtp_base + 1000, sip_tls=tls2, **asterisk)
        self.dns = Dnsmasq(records(self.pbx1, self.pbx2), tmp / "dnsmasq.log")
        self.box: Intercom | None = None
        self.phones: list[Baresip] = []
        self.heard = tmp / "box-heard.wav"
        self.failback = 2.0

    def start(self) -> Site:
        self.dns.start()
        self.pbx1.start()
        self.pbx2.start()
        return self

    def start_box(self, **sip: Any) -> Intercom:
        """The box resolving through this site's dnsmasq, answering calls by itself, sending
        a 700 Hz tone and recording what it hears (``heard``); ``sip`` overrides."""
        settings: dict[str, Any] = {
            "port": None, "dns_servers": [self.dns.server], "local_address": "127.0.0.1",
            "retry_min": 1, "retry_max": 2, "failback_interval": 2,
            "calls": {"auto_answer": True, "auto_answer_delay": 0.2},
            "audio": {"capture": "tone:700", "playback": f"wav:{self.heard}"}}
        settings.update(sip)
        self.failback = float(settings["failback_interval"])
        self.box = Intercom(self.tmp / "box", 0, **settings).start()
        return self.box

    def address(self, pbx: Asterisk) -> str:
        """The address:port the box registers with at ``pbx`` (its TLS port when it has one)."""
        return f"{pbx.bind}:{pbx.sip_tls_port or pbx.port}"

    def wait_at(self, pbx: Asterisk, timeout: float, what: str) -> dict:
        """Until the box is registered with ``pbx`` and its status names it; that status."""
        assert self.box is not None
        box = self.box
        wait_for(lambda: pbx.registered("5002"), timeout, 0.2, f"5002 at {what}")
        return wait_for(lambda: (r := registrar(box)).get("address") == self.address(pbx)
                        and r, 10, 0.2, f"status naming {what}")

    def fail_over_and_answer(self, within: float, idle: float = 0.0, **phone: Any) -> Baresip:
        """Stop the primary: the box registers with the secondary within ``within`` s and its
        status says it moved there from the failed primary; it stays there ``idle`` s while
        the primary is still down (tries of the primary included); a phone (1000 Hz) on the
        secondary calls the box, which answers. Returns the phone, in the call."""
        assert self.box is not None
        call = Baresip(self.pbx2, "5001", tone_hz=1000, tmp=self.tmp / "phone", **phone)
        self.phones.append(call)
        call.start()  # ready before the move: it dials as soon as the box is there
        self.pbx1.stop()
        stopped = time.monotonic()
        reg = self.wait_at(self.pbx2, within + 5, "the secondary")
        moved_in = time.monotonic() - stopped
        assert moved_in < within, f"moved after {moved_in:.1f} s"
        assert reg["preferred"] is False
        assert f"{self.address(self.pbx1)} failed" in reg["moved"], reg["moved"]
        until = time.monotonic() + idle
        while time.monotonic() < until:
            st = self.box.status()
            assert st["registered"] and st["registrar"]["address"] == self.address(self.pbx2), \
                f"left the secondary while the primary is down: {st['registrar']}"
            time.sleep(0.1)
        call.command("dial", f"sip:5002@{SECONDARY}:{self.pbx2.port}")
        self.box.wait_state("in_call", 15)
        call.wait_event("CALL_ESTABLISHED", 10)
        return call

    def stream_returns_after_the_call(self, phone: Baresip) -> None:
        """Over a stream (TCP, TLS): the primary back during the call, the box stays on the
        secondary (the call's server reaches it only over that connection); once the call is
        over its probe finds the primary and it registers there again; the connection moved
        only for the failover and the return; the call carried the phone's tone."""
        assert self.box is not None
        box = self.box
        time.sleep(2)
        self.pbx1.start()
        time.sleep(self.failback + 1)  # the return is due but waits for the call's end
        assert box.status()["state"] == "in_call"
        assert registrar(box)["address"] == self.address(self.pbx2)
        phone.command("hangup")
        box.wait_state("idle", 10)
        assert self.wait_at(self.pbx1, 15, "the primary again")["preferred"] is True
        wait_for(lambda: box.status().get("registered"), 10, 0.2, "registered again")
        # the probes of the stopped primary (every 2 s) went beside the connection: it moved
        # twice, to the secondary and back, never away from the secondary for a try
        assert box.log().count("moving the connection") == 2, "the connection left the backup"
        x, rate = wav_array(self.heard)
        assert abs(peak_hz(x[rate:], rate) - 1000) < 15, "the call carried the phone's tone"

    def close(self) -> None:
        for phone in self.phones:
            phone.stop()
        if self.box is not None:
            self.box.stop()
        for pbx in (self.pbx1, self.pbx2):
            pbx.cleanup()
        self.dns.stop()


@contextmanager
def site(tmp: Path, records: Callable[[Asterisk, Asterisk], list[str]], rtp_base: int,
         **kw: Any) -> Iterator[Site]:
    """A started ``Site``, closed at the end whatever happened."""
    s = Site(tmp, records, rtp_base, **kw)
    try:
        yield s.start()
    finally:
        s.close()
