"""Provisioning by MAC, the pure parts and the swap: the URL, the boot YAML as the floor and the
provisioned document over it key by key, refused documents keep the last good one (errors name
the source and line, never a secret), the cache file written atomically 0600, the MAC of the
routing interface, and the App replaced only while idle (on test_app's fake parts)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from firmware import provisioning_io as pio
from firmware import supervisor as sv
from firmware.app import App, run_provisioned
from firmware.config import ConfigError, parse_boot, parse_config, parse_provisioned
from firmware.provisioning import (
    CACHE_NAME,
    Provisioner,
    cache_dir,
    digest,
    shown_url,
    url_for,
)
from firmware.systemd import Notifier

from .test_app import FakeAudio, FakeBoards, FakeClock, FakeControls, FakeMedia, FakeNetwork

CA = Path(__file__).resolve().parents[1] / "data"  # any existing file stands in for a CA here


def boot_text(ca: Path, extra: str = "", sip: str = "  server: 127.0.0.2\n  username: 5002\n",
              url: str = "https://prov.test/intercom/{mac}.yaml") -> str:
    return (f"sip:\n{sip}  register: false\n  keepalive: 'off'\n  local_port: 5070\n"
            f"calls: {{door_code: '1234'}}\n"
            f"gpio:\n  pin_factory: mock\n  buttons:\n    flat2: {{pin: 24, target: '5001'}}\n"
            f"control: {{socket: /nonexistent/intercom.sock}}\n"
            f"provisioning:\n  url: {url}\n  ca_file: {ca}\n  mac: B8-27-EB-12-34-56\n"
            + extra)


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    f = tmp_path / "ca.crt"
    f.write_text("-----BEGIN CERTIFICATE-----\n")
    return f


# ----------------------------------------------------------------------------- URL, config

def _run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``asyncio.run`` on a thread of its own: a loop another test left marked as running in
    the main thread (seen in the full suite) must not decide this test."""
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(asyncio.wait_for(scenario(), 30))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the scenario did not finish"
    if failure:
        raise failure[0]

def test_url_substitution_and_what_status_shows() -> None:
    assert url_for("https://p/i/{mac}.yaml", "b827eb123456") == "https://p/i/b827eb123456.yaml"
    assert url_for("https://p/cfg-{mac}", "001122aabbcc") == "https://p/cfg-001122aabbcc"
    assert shown_url("https://p:8443/i/x.yaml?token=s3cret") == "https://p:8443/i/x.yaml?…"


@pytest.mark.parametrize("url,needle", [
    ("http://prov.test/{mac}.yaml", "must be an https:// URL"),
    ("https://user:pw@prov.test/{mac}", "must be an https:// URL without user name"),
    ("https://prov.test/{serial}.yaml", "may only contain the placeholder {mac}"),
])
def test_provisioning_url_is_https_only(ca: Path, url: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_boot(boot_text(ca, url=url), "boot.yaml")
    assert "provisioning.url (line 14)" in str(info.value) and needle in str(info.value)


def test_provisioning_needs_a_pinned_ca_and_normalises_the_mac(ca: Path) -> None:
    text = boot_text(ca).replace(f"  ca_file: {ca}\n", "")
    with pytest.raises(ConfigError, match=r"provisioning.url \(line 14\) needs provisioning"
                                          r".ca_file"):
        parse_boot(text, "boot.yaml")
    with pytest.raises(ConfigError, match=r"provisioning.ca_file \(line 15\) must name the CA"):
        parse_boot(boot_text(ca).replace(str(ca), "/nonexistent/ca.pem"), "boot.yaml")
    with pytest.raises(ConfigError, match=r"provisioning.mac \(line 16\) must be a MAC"):
        parse_boot(boot_text(ca).replace("B8-27-EB-12-34-56", "b8:27:eb:12:34"), "boot.yaml")
    assert parse_boot(boot_text(ca)).provisioning.mac == "b827eb123456"


def test_a_boot_yaml_may_leave_sip_to_the_server_only_with_a_url(ca: Path) -> None:
    lean = boot_text(ca, sip="  password: ''\n")
    boot = parse_boot(lean, "boot.yaml")
    assert boot.config is None and boot.provisioning.url
    with pytest.raises(ConfigError, match="missing required key sip.server"):
        parse_boot(lean.split("provisioning:")[0], "boot.yaml")
    # every key it has is still checked, with its line
    with pytest.raises(ConfigError, match=r"boot.yaml: sip.local_port \(line 5\) must be a port"):
        parse_boot(lean.replace("local_port: 5070", "local_port: 70000"), "boot.yaml")


# ----------------------------------------------------------------------------- precedence
def test_the_provisioned_document_overrides_the_boot_yaml_key_by_key(ca: Path) -> None:
    boot = parse_boot(boot_text(ca, extra="media: {srtp: optional}\n"), "boot.yaml")
    doc = ("sip:\n  password: from-the-server\n  display_name: Door A\n"
           "calls:\n  door_code: '4711'\n"
           "gpio:\n  buttons:\n    flat2: {target: '5101'}\n")
    cfg = parse_provisioned(doc, "https://prov.test/x.yaml", boot)
    assert cfg.sip.server == "127.0.0.2" and cfg.sip.username == "5002"  # from the card
    assert cfg.sip.password == "from-the-server" and cfg.sip.display_name == "Door A"
    assert cfg.calls.door_code == "4711"
    button = next(b for b in cfg.gpio.buttons if b.name == "flat2")
    assert button.pin == 24 and button.target == "5101"  # merged inside the button
    assert cfg.media.srtp == "optional", "the card's explicit srtp is not reset to the default"
    assert cfg.provisioning == boot.provisioning


def test_a_provisioned_document_cannot_redirect_the_box(ca: Path) -> None:
    boot = parse_boot(boot_text(ca))
    doc = "sip:\n  password: x\nprovisioning:\n  url: https://evil.test/{mac}\n"
    with pytest.raises(ConfigError, match=r"^https://prov.test/x: provisioning \(line 3\) may "
                                          r"only be set in the boot partition's YAML"):
        parse_provisioned(doc, "https://prov.test/x", boot)


def test_a_boot_yaml_without_url_parses_as_before(ca: Path) -> None:
    text = boot_text(ca).split("provisioning:")[0]
    assert parse_boot(text).config == parse_config(text)


# ----------------------------------------------------------------------------- keep last good
GOOD = b"sip:\n  password: door-s3cret\ncalls:\n  door_code: '9876'\n"
GOOD2 = b"sip:\n  password: other-s3cret\n  display_name: Hall\n"


def test_a_refused_document_keeps_the_last_good_and_names_its_line(
        ca: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    prov = Provisioner(parse_boot(boot_text(ca)))
    prov.url = url_for(prov.boot.provisioning.url or "", "b827eb123456")
    assert prov.config() is prov.boot.config and prov.pending() is None
    assert prov.offer(GOOD, "server", 1000.0) is True
    good = prov.pending()
    assert good is not None and good.sip.password == "door-s3cret"
    prov.applied(good)
    bad = b"sip:\n  password: leaked-s3cret\ncalls:\n  door_code: '12x4'\n"
    assert prov.offer(bad, "server", 1001.0) is False
    assert prov.config() is good and prov.pending() is None
    st = prov.status()
    assert st["last_result"] == "refused" and st["refused"] == 1
    assert st["last_error"].startswith("https://prov.test/intercom/b827eb123456.yaml: "
                                       "calls.door_code (line 4) may only contain DTMF")
    for junk in (b"\xff\xfe", b"sip: [\n", b"- a\n", b"sip:\n  port: 99999\n"):
        assert prov.offer(junk, "server", 1002.0) is False
        assert prov.config() is good
    assert prov.offer(GOOD, "server", 1003.0) is False  # the same document: nothing to do
    assert prov.status()["last_result"] == "unchanged" and prov.status()["last_error"] is None
    text = repr(prov.status()) + caplog.text
    for secret in ("door-s3cret", "leaked-s3cret", "9876", "12x4"):
        assert secret not in text, f"{secret} reached the status or the log"
    assert prov.status()["applied"] == prov.good_hash and len(prov.good_hash or "") == 16


def test_a_document_the_intercom_cannot_start_with_falls_back_and_is_not_retried(
        ca: Path) -> None:
    prov = Provisioner(parse_boot(boot_text(ca)))
    prov.offer(GOOD, "server", 1.0)
    first = prov.pending()
    assert first is not None
    prov.applied(first)
    prov.offer(GOOD2, "server", 2.0)
    broken = prov.pending()
    assert broken is not None and broken.sip.display_name == "Hall"
    prov.start_failed(broken, "cannot resolve sip.server")
    assert prov.config() is first and prov.pending() is None
    assert prov.offer(GOOD2, "server", 3.0) is False and prov.pending() is None


def test_retry_backs_off_up_to_the_interval(ca: Path) -> None:
    prov = Provisioner(parse_boot(boot_text(ca, extra="  interval: 300\n  retry: 10\n")))
    delays = []
    for _ in range(7):
        prov.fetch_failed("cannot reach the server: Connection refused", 0.0)
        delays.append(prov.next_delay())
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    prov.offer(GOOD, "server", 1.0)
    assert prov.next_delay() == 300


def test_the_default_cache_sits_next_to_the_control_socket(ca: Path, tmp_path: Path) -> None:
    assert cache_dir(parse_boot(boot_text(ca))) == Path("/nonexistent/provisioning")
    own = parse_boot(boot_text(ca, extra=f"  cache_dir: {tmp_path}\n"))
    assert cache_dir(own) == tmp_path


# ----------------------------------------------------------------------------- cache file
def test_the_cache_is_written_atomically_and_privately(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "prov"
    pio.save(folder, CACHE_NAME, GOOD)
    f = folder / CACHE_NAME
    assert f.read_bytes() == GOOD
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # a write that dies half-way (a full disk, a power cut before the rename) leaves the old one
    real_write = os.write

    def dies(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[:5]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pio.os, "write", dies)
    with pytest.raises(OSError):
        pio.save(folder, CACHE_NAME, GOOD2)
    monkeypatch.undo()
    assert pio.load(folder, CACHE_NAME, 65536) == GOOD
    pio.save(folder, CACHE_NAME, GOOD2)
    assert pio.load(folder, CACHE_NAME, 65536) == GOOD2
    assert pio.load(folder, CACHE_NAME, 10) is None, "larger than the cap: not read"
    assert pio.load(tmp_path / "none", CACHE_NAME, 65536) is None
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / CACHE_NAME).symlink_to(f)
    assert pio.load(tmp_path / "link", CACHE_NAME, 65536) is None, "a symlink is not followed"


# ----------------------------------------------------------------------------- MAC
ROUTES = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
          "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
          "eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
          "wlan0\t0014000A\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n"
          "tun0\t0000000B\t00000000\t0000\t0\t0\t0\t000000FF\t0\t0\t0\n")


def test_the_mac_is_the_routing_interface_s(tmp_path: Path) -> None:
    routes = tmp_path / "route"
    routes.write_text(ROUTES)
    net = tmp_path / "net"
    for name, mac in (("eth0", "B8:27:EB:12:34:56\n"), ("wlan0", "b8:27:eb:ab:cd:ef\n"),
                      ("lo", "00:00:00:00:00:00\n")):
        (net / name).mkdir(parents=True)
        (net / name / "address").write_text(mac)
    assert pio.route_interface("192.168.1.10", routes) == "eth0"
    assert pio.route_interface("10.0.20.7", routes) == "wlan0"  # the longer prefix wins
    assert pio.route_interface("8.8.8.8", routes) == "eth0"  # the default route
    assert pio.route_interface("11.0.0.1", routes) == "eth0", "a route that is down is skipped"
    assert pio.interface_mac("eth0", net) == "b827eb123456"
    assert pio.interface_mac("lo", net) is None and pio.interface_mac("nope", net) is None
    assert pio.route_mac("127.0.0.1", 443, routes, net) == "b827eb123456"  # via the default
    with pytest.raises(pio.FetchError, match="no route to the provisioning server"):
        pio.route_mac("127.0.0.1", 443, tmp_path / "missing", net)


# ----------------------------------------------------------------------------- the swap
class Fleet:
    """Every App run_provisioned makes, on test_app's fake parts and one fake clock."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.apps: list[App] = []
        self.boards: list[FakeBoards] = []

    def make(self, cfg: Any) -> App:
        boards = FakeBoards()
        app = App(cfg, clock=self.clock, network=FakeNetwork(), media=FakeMedia(),
                  audio=FakeAudio(), boards=boards, controls=FakeControls(),
                  notifier=Notifier({}))
        self.apps.append(app)
        self.boards.append(boards)
        return app


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.02)


def test_a_changed_configuration_is_applied_only_while_idle(ca: Path, tmp_path: Path) -> None:
    boot = parse_boot(boot_text(ca, extra=f"  cache_dir: {tmp_path}\n  interval: 1\n"))
    fleet = Fleet()
    docs: asyncio.Queue[bytes] = asyncio.Queue()

    async def fetch(url: str) -> bytes:
        assert url == "https://prov.test/intercom/b827eb123456.yaml"
        return await docs.get()

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_provisioned(boot, stop, fetch=fetch, make_app=fleet.make))
        await _until(lambda: fleet.apps and fleet.apps[0].ua is not None)
        assert fleet.apps[0].cfg is boot.config, "the boot YAML runs at once"
        status = fleet.apps[0].status()["provisioning"]
        assert status["source"] == "boot" and status["applied"] is None
        await docs.put(GOOD)
        await _until(lambda: len(fleet.apps) == 2 and fleet.apps[1].ua is not None)
        first = fleet.apps[1]
        assert first.cfg.sip.password == "door-s3cret" and fleet.apps[0].ua is not None
        assert (tmp_path / CACHE_NAME).read_bytes() == GOOD
        # a call is going on: the next document waits for its end
        fleet.boards[1].board.press("call")  # type: ignore[union-attr]
        fleet.clock.run()
        assert first.state == "calling"
        await docs.put(GOOD2)
        await _until(lambda: first.status()["provisioning"]["pending"] is not None)
        for _ in range(3):  # the loop looks at the state once a second
            await asyncio.sleep(1.1)
            assert len(fleet.apps) == 2 and first.state == "calling"
        # a press while the old App stops is replayed on the new one
        fleet.boards[1].close = lambda: (  # type: ignore[method-assign]
            first._press_from_thread("call"), fleet.clock.run())
        first.dispatch(sv.UserHangup())  # CANCEL; nobody answers: the transaction times out
        fleet.clock.run(until=fleet.clock.now + 70)
        assert first.state == "idle"
        await _until(lambda: len(fleet.apps) == 3 and fleet.apps[2].ua is not None)
        await _until(lambda: fleet.apps[2].state == "calling")
        assert fleet.apps[2].cfg.sip.display_name == "Hall"
        st = fleet.apps[2].status()["provisioning"]
        assert st["applied"] == digest(GOOD2) and st["pending"] is None
        stop.set()
        await task

    _run(scenario)


def test_the_cached_document_is_used_when_the_server_is_down(ca: Path, tmp_path: Path) -> None:
    boot = parse_boot(boot_text(ca, sip="  password: ''\n",
                                extra=f"  cache_dir: {tmp_path}\n"))
    assert boot.config is None
    fleet = Fleet()
    pio.save(tmp_path, CACHE_NAME, b"sip: {server: 127.0.0.2, username: '5002', password: c}\n")

    async def down(url: str) -> bytes:
        raise pio.FetchError("cannot reach the server: Connection refused")

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_provisioned(boot, stop, fetch=down, make_app=fleet.make))
        await _until(lambda: fleet.apps and fleet.apps[0].ua is not None)
        await _until(lambda: fleet.apps[0].status()["provisioning"]["last_result"] == "failed")
        st = fleet.apps[0].status()["provisioning"]
        assert st["source"] == "cache" and st["applied"] is not None
        assert st["last_error"] == "cannot reach the server: Connection refused"
        assert fleet.apps[0].cfg.sip.password == "c" and len(fleet.apps) == 1
        stop.set()
        await task

    _run(scenario)
