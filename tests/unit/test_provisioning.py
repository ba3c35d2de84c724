"""Provisioning by MAC, the pure parts and the swap: the URL, the boot YAML as the floor and the
provisioned document over it key by key, refused documents keep the last good one (errors name
the source and line, never a secret), the cache file written atomically 0600, the MAC of the
routing interface, and the App replaced only while idle (on devtools.box.fakes' parts)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from devtools.box.fakes import (
    FakeAudio,
    FakeBoards,
    FakeClock,
    FakeControls,
    FakeMedia,
    FakeNetwork,
)
from devtools.waiting import run_apart
from firmware import provisioning_io as pio
from firmware import supervisor as sv
from firmware.app import App
from firmware.config import ConfigError, parse_boot, parse_config, parse_provisioned
from firmware.provisioning import (
    CACHE_NAME,
    Provisioner,
    cache_dir,
    digest,
    shown_url,
    url_for,
    url_from_option43,
)
from firmware.runner import run_provisioned
from firmware.systemd import Notifier

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
    """The scenario within 30 s, on a thread of its own (``run_apart``)."""
    run_apart(asyncio.wait_for(scenario(), 30))

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


def test_the_cache_is_on_the_data_partition_when_it_is_usable(ca: Path, tmp_path: Path) -> None:
    boot = parse_boot(boot_text(ca))
    assert cache_dir(boot, tmp_path) == (tmp_path / "provisioning", "data partition")
    assert cache_dir(boot, None) == (Path("/nonexistent/provisioning"), "RAM")
    own = parse_boot(boot_text(ca, extra=f"  cache_dir: {tmp_path}\n"))
    assert cache_dir(own, tmp_path / "data") == (tmp_path, "provisioning.cache_dir")
    # usable: a folder this process may write (the partition mounted, not read-only)
    assert pio.data_usable(tmp_path)
    assert not pio.data_usable(tmp_path / "missing"), "/data not mounted: no intercom/ there"
    (tmp_path / "file").write_text("")
    assert not pio.data_usable(tmp_path / "file")


# ----------------------------------------------------------------------------- cache file
def test_the_cache_is_written_atomically_and_privately(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "prov"
    pio.save_cache(folder, CACHE_NAME, GOOD, None)
    f = folder / CACHE_NAME
    assert f.read_bytes().endswith(GOOD) and f.read_bytes().startswith(b"# intercom")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # a write that dies half-way (a full disk, a power cut before the rename) leaves the old one
    real_write = os.write

    def dies(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[:5]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pio.os, "write", dies)
    with pytest.raises(OSError):
        pio.save_cache(folder, CACHE_NAME, GOOD2, None)
    monkeypatch.undo()
    assert pio.read_cache(folder, CACHE_NAME, 65536, None) == (GOOD, None)
    pio.save_cache(folder, CACHE_NAME, GOOD2, b"\x01sig")
    assert pio.read_cache(folder, CACHE_NAME, 65536, None) == (GOOD2, b"\x01sig")
    assert pio.read_cache(tmp_path / "none", CACHE_NAME, 65536, None) is None
    f.write_bytes(f.read_bytes() + b"x" * 20000)
    with pytest.raises(pio.CacheError, match="larger than provisioning.max_size"):
        pio.read_cache(folder, CACHE_NAME, 1024, None)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / CACHE_NAME).symlink_to(f)
    with pytest.raises(pio.CacheError, match="cannot read it"):
        pio.read_cache(tmp_path / "link", CACHE_NAME, 65536, None)  # a symlink is not followed


@pytest.mark.parametrize("damage, why", [
    (lambda d: d[: len(d) - 7], "checksum does not match"),  # written only in part
    (lambda d: d[:-3] + b"X" + d[-2:], "checksum does not match"),  # one byte changed
    (lambda d: d.split(b"\n", 1)[1], "no checksum line"),  # an older release's bare document
    (lambda d: b"", "no checksum line"),  # an empty file
])
def test_a_damaged_cache_is_refused_whole(tmp_path: Path, damage: Callable[[bytes], bytes],
                                          why: str) -> None:
    pio.save_cache(tmp_path, CACHE_NAME, GOOD, None)
    f = tmp_path / CACHE_NAME
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(pio.CacheError, match=why):
        pio.read_cache(tmp_path, CACHE_NAME, 65536, None)


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
    """Every App run_provisioned makes, on devtools.box.fakes' parts and one fake clock."""

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
        # kept once the intercom started with it
        await _until(lambda: pio.read_cache(tmp_path, CACHE_NAME, 65536, None) == (GOOD, None))
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


def test_provisioning_results_are_events_without_the_document(ca: Path, tmp_path: Path) -> None:
    """The building hears what happened to a provisioned document (#22): applied (its hash),
    refused (the status's one-line reason, told once however often it is fetched again), and
    never a word of the document itself (its passwords, its door code)."""
    boot = parse_boot(boot_text(ca, extra=f"  cache_dir: {tmp_path}\n  interval: 1\n"))
    fleet = Fleet()
    docs: asyncio.Queue[bytes] = asyncio.Queue()
    seen: list[Any] = []

    async def fetch(url: str) -> bytes:
        return await docs.get()

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_provisioned(boot, stop, fetch=fetch, make_app=fleet.make))
        await _until(lambda: fleet.apps and fleet.apps[0].ua is not None)
        await docs.put(GOOD)
        await _until(lambda: len(fleet.apps) == 2 and fleet.apps[1].ua is not None)
        app = fleet.apps[1]
        seen.extend(app.chronicle.recent())
        for _ in range(2):  # the same refusal twice: told once
            await docs.put(b"sip:\n  pasword: typo-s3cret\n")
            await _until(lambda: docs.empty() and app.status()["provisioning"]["last_result"]
                         == "refused")
            await asyncio.sleep(1.2)
        seen.extend(e for e in app.chronicle.recent() if e not in seen)
        stop.set()
        await task

    _run(scenario)
    told = [e for e in seen if e["kind"] == "provisioning"]
    assert [(e["result"], e.get("config")) for e in told] == [
        ("applied", digest(GOOD)), ("refused", None)], told
    assert "pasword" in told[1]["reason"], told[1]
    for e in told:
        assert "s3cret" not in str(e) and "9876" not in str(e), e


def test_the_cached_document_is_used_when_the_server_is_down(ca: Path, tmp_path: Path) -> None:
    boot = parse_boot(boot_text(ca, sip="  password: ''\n",
                                extra=f"  cache_dir: {tmp_path}\n"))
    assert boot.config is None
    fleet = Fleet()
    pio.save_cache(tmp_path, CACHE_NAME,
                   b"sip: {server: 127.0.0.2, username: '5002', password: c}\n", None)

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


# ----------------------------------------------------------------------------- data partition
def test_the_last_good_document_survives_a_reboot_on_the_data_partition(
        ca: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Three boots of one box: the server answers (kept on /data), the server is down (the
    kept one runs), the kept file was damaged (one line, the card's YAML runs)."""
    data = tmp_path / "data-intercom"
    data.mkdir(mode=0o700)
    monkeypatch.setattr(pio, "DATA", data)
    boot = parse_boot(boot_text(ca, extra="  interval: 1\n"))
    kept = data / "provisioning" / CACHE_NAME

    async def up(url: str) -> bytes:
        return GOOD

    async def down(url: str) -> bytes:
        raise pio.FetchError("cannot reach the server: Connection refused")

    def boot_once(fetch: Callable[[str], Any], until: Callable[[Fleet], bool]) -> Fleet:
        fleet = Fleet()

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(run_provisioned(boot, stop, fetch=fetch,
                                                       make_app=fleet.make))
            await _until(lambda: fleet.apps and fleet.apps[-1].ua is not None
                         and until(fleet))
            stop.set()
            await task

        _run(scenario)
        return fleet

    first = boot_once(up, lambda f: kept.exists())
    st = first.apps[-1].status()["provisioning"]
    assert st["cache"] == "data partition" and st["cache_dir"] == str(data / "provisioning")
    assert st["applied"] == digest(GOOD) and first.apps[-1].cfg.sip.password == "door-s3cret"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600

    second = boot_once(down, lambda f: f.apps[-1].status()["provisioning"]["last_result"])
    st = second.apps[-1].status()["provisioning"]
    assert len(second.apps) == 1, "the kept document runs from the start, no swap"
    assert st["source"] == "cache" and st["applied"] == digest(GOOD)
    assert second.apps[0].cfg.sip.password == "door-s3cret"

    kept.write_bytes(kept.read_bytes()[:-4])  # a partial write (or a flipped bit)
    caplog.clear()
    caplog.set_level(logging.INFO)
    third = boot_once(down, lambda f: f.apps[-1].status()["provisioning"]["last_result"])
    assert third.apps[0].cfg is boot.config, "never left with nothing: the card's YAML runs"
    said = [r.getMessage() for r in caplog.records if "is ignored" in r.getMessage()]
    assert said == [f"provisioning: the cached configuration {kept} is ignored: the checksum "
                    "does not match (damaged or partly written)"]
    assert "door-s3cret" not in caplog.text


def test_a_read_only_data_partition_is_not_used(tmp_path: Path) -> None:
    """/data fell back to read-only (ext4 errors=remount-ro): the RAM folder is used instead.
    A real read-only mount in a mount namespace of its own (root sees through 0500 modes)."""
    folder = tmp_path / "data"
    folder.mkdir()
    probe = ("import sys; from pathlib import Path; from firmware.provisioning_io import "
             "data_usable; print(data_usable(Path(sys.argv[1])))")
    done = subprocess.run(["unshare", "--mount", "sh", "-c",
                           f'mount -t tmpfs -o ro tmpfs "$1" && exec "$2" -c \'{probe}\' "$1"',
                           "sh", str(folder), sys.executable],
                          capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert pio.data_usable(folder), "outside that namespace the same folder is writable"


# ----------------------------------------------------------------------------- DHCP
LEASES = Path(__file__).resolve().parents[1] / "data" / "provisioning"


def test_option_43_from_real_networkd_leases() -> None:
    """Lease files written by systemd-networkd (Debian 12's 252, in a network namespace, from
    dnsmasq: tests/integration/networkd_dhcp.py made them): option 43 as plain text and as
    vendor sub-option 1 (dnsmasq's vendor:intercom-rpi,1,...)."""
    text = pio.lease_option43((LEASES / "networkd-252-option43-text.lease").read_text())
    assert text == b"https://prov.example/intercom/"
    assert url_from_option43(text) == "https://prov.example/intercom/{mac}.yaml"
    vendor = pio.lease_option43((LEASES / "networkd-252-option43-vendor.lease").read_text())
    assert vendor is not None and vendor[:2] == b"\x01\x24"
    assert url_from_option43(vendor) == "https://prov.example/door/{mac}.yaml"
    assert pio.lease_option43("ADDRESS=10.0.0.2\nVENDOR_SPECIFIC=zz\n") is None
    assert pio.lease_option43("ADDRESS=10.0.0.2\n") is None


@pytest.mark.parametrize("value, url", [
    (b"https://p.example/i/{mac}.yaml", "https://p.example/i/{mac}.yaml"),
    (b"https://p.example", "https://p.example/{mac}.yaml"),
    (b"https://p.example:8443/cfg/?t=1", "https://p.example:8443/cfg/{mac}.yaml?t=1"),
    (b"https://p.example/all.yaml\0", "https://p.example/all.yaml"),  # one file for every box
    (b"\x02\x03abc\x01\x14https://p.example/x/\xff", "https://p.example/x/{mac}.yaml"),
])
def test_the_url_in_option_43(value: bytes, url: str) -> None:
    assert url_from_option43(value) == url


@pytest.mark.parametrize("value, why", [
    (b"http://p.example/i/{mac}.yaml", "holds no https:// URL"),  # never clear text
    (b"p.example", "holds no https:// URL"),  # a TFTP-style server name
    (b"\x01\x0ehttp://p.ex/a/", "holds no https:// URL"),
    (b"https://u:pw@p.example/{mac}", "without user name or password"),
    (b"https://p.example/{serial}.yaml", "may only contain the placeholder {mac}"),
    (b"https://p.example/\xc3\xa9", "holds no https:// URL"),
    (b"", "holds no https:// URL"),
])
def test_option_43_without_a_usable_url_is_refused(value: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        url_from_option43(value)


def test_the_box_fetches_the_url_dhcp_handed_out(ca: Path, tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    leases.mkdir()
    boot = parse_boot(boot_text(ca, url="dhcp", extra=f"  dhcp_leases: {leases}\n"
                                f"  cache_dir: {tmp_path / 'cache'}\n  retry: 1\n"))
    fleet = Fleet()
    asked: list[str] = []

    async def fetch(url: str) -> bytes:
        asked.append(url)
        return GOOD

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_provisioned(boot, stop, fetch=fetch, make_app=fleet.make))
        await _until(lambda: fleet.apps and fleet.apps[0].status()["provisioning"]["last_error"])
        st = fleet.apps[0].status()["provisioning"]
        assert st["last_result"] == "failed" and "no DHCP lease carries option 43" in \
            st["last_error"] and st["url_from"] == "dhcp option 43" and not asked
        # the lease arrives (networkd writes it with the interface index as its name)
        lease = (LEASES / "networkd-252-option43-vendor.lease").read_text()
        (leases / "2").write_text(lease)
        await _until(lambda: len(fleet.apps) == 2 and fleet.apps[1].ua is not None)
        assert asked[0] == "https://prov.example/door/b827eb123456.yaml"
        assert fleet.apps[1].status()["provisioning"]["url"] == asked[0]
        stop.set()
        await task

    _run(scenario)


def test_dhcp_needs_a_pinned_ca(ca: Path) -> None:
    text = boot_text(ca, url="dhcp").replace(f"ca_file: {ca}", "ca_file: system")
    with pytest.raises(ConfigError, match=r"provisioning.ca_file \(line 15\) must name a pinned "
                                          r"CA with provisioning.url: dhcp"):
        parse_boot(text, "boot.yaml")
    assert parse_boot(boot_text(ca, url="dhcp")).provisioning.url == "dhcp"
