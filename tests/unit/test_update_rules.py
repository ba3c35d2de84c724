"""The updater's pure rules: semantic-version order, the manifest rules of firmware.update.bundle
(which device, which version, refused before, --force), RAUC's error text mapped to one reason
(the wording of RAUC 1.8, run on this host, and of 1.13, the box's, read from its source at tag
v1.13: src/install.c, src/bundle.c, src/signature.c, src/main.c), and when a reboot into the new
slot may happen (idle, registered, inside update.window). Real ``rauc info`` on real bundles is
tests/integration/test_update_bundle.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from firmware.config import ConfigError, parse_boot, parse_config, parse_provisioned
from firmware.update import bundle as b
from firmware.update.installer import DOWN_GRACE, Activity, in_window, reboot_verdict
from firmware.update.state import UpdateError


@pytest.mark.parametrize("older,newer", [
    ("0.1.0", "0.2.0"), ("0.2.0", "0.10.0"), ("0.9.9", "1.0.0"), ("1.0.0-rc.1", "1.0.0"),
    ("1.0.0-alpha", "1.0.0-alpha.1"), ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
    ("1.0.0-alpha.beta", "1.0.0-beta"), ("1.0.0-beta.2", "1.0.0-beta.11"),
    ("1.0.0-rc.1", "1.0.0-rc.1.1"), ("0.1.0", "0.1.1-rc1"),
])
def test_semantic_version_order(older: str, newer: str) -> None:
    assert b.compare_versions(older, newer) == -1
    assert b.compare_versions(newer, older) == 1
    assert b.compare_versions(newer, newer) == 0


def test_build_metadata_does_not_order_and_non_versions_are_refused() -> None:
    assert b.compare_versions("1.2.3+build.5", "1.2.3+other") == 0
    for bad in ("1.2", "01.2.3", "1.2.3-", "v1.2.3", "1.2.3-a..b", ""):
        assert b.parse_version(bad) is None, bad
    with pytest.raises(ValueError):
        b.compare_versions("1.2", "1.2.3")


def bundle(version: str = "0.3.0", compatible: str = b.COMPATIBLE, fmt: str = "verity",
           images: tuple[str, ...] = ("rootfs",)) -> b.Bundle:
    return b.Bundle(Path("x.raucb"), compatible, version, fmt, images, "00" * 32, "00" * 32,
                    4096)


@pytest.mark.parametrize("made,installed,refused,force,reason", [
    (bundle(), "0.2.0", [], False, None),
    (bundle(compatible="intercom-rpi-armhf"), "0.2.0", [], False, b.OTHER_DEVICE),
    (bundle(compatible="intercom-rpi-armhf"), "0.2.0", [], True, b.OTHER_DEVICE),
    (bundle(fmt="plain"), "0.2.0", [], False, b.OTHER_DEVICE),
    (bundle(images=("appfs",)), "0.2.0", [], False, b.OTHER_DEVICE),
    (bundle(version="nightly"), "0.2.0", [], True, b.OTHER_DEVICE),
    (bundle(version="0.1.0"), "0.2.0", [], False, b.OLDER),
    (bundle(version="0.1.0"), "0.2.0", [], True, None),
    (bundle(version="0.2.0"), "0.2.0", [], False, b.SAME),
    (bundle(version="0.2.0-rc.1"), "0.2.0", [], False, b.OLDER),
    (bundle(), "0.2.0", ["0.3.0"], False, b.REFUSED_BEFORE),
    (bundle(), "0.2.0", ["0.3.0"], True, None),
    (bundle(version="0.4.0"), "0.2.0", ["0.3.0"], False, None),  # a newer one is installed
    (bundle(version="0.1.0"), "unknown", [], False, None),  # RAUC's min-bundle-version decides
])
def test_the_manifest_rules(made: b.Bundle, installed: str, refused: list[str], force: bool,
                            reason: str | None) -> None:
    if reason is None:
        b.judge(made, installed, refused, force)
        return
    with pytest.raises(UpdateError) as info:
        b.judge(made, installed, refused, force)
    assert info.value.reason == reason and info.value.result == "refused"
    assert info.value.version == made.version
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("stderr,stdout,result,reason", [
    # RAUC 1.8 on this host (rauc info), OpenSSL 3.0
    ("rauc-Message: 18:03:00.970: Reading bundle: /x.raucb\n"
     "signature verification failed: Verify error: self-signed certificate\n", "",
     "refused", b.OTHER_KEY),
    ("signature verification failed: Verify error: unable to get local issuer certificate", "",
     "refused", b.OTHER_KEY),
    ("signature verification failed: Verify error: certificate is not yet valid", "",
     "refused", b.CERT_TIME),
    ("signature verification failed: Verify error: certificate has expired", "",
     "refused", b.CERT_TIME),
    ("signature verification failed: error:02000068:rsa routines::bad signature",
     "809F1510BE7F0000:error:1700009E:CMS routines:CMS_SignerInfo_verify:verification failure",
     "refused", b.TAMPERED),
    ("signature verification failed: error:17000087:CMS routines::no signers", "",
     "refused", b.UNSIGNED),
    ("Invalid bundle format: Signature size is 0", "", "refused", b.UNSIGNED),
    ("Invalid bundle format: Signature size (1922648842743781044) exceeds bundle size", "",
     "refused", b.TAMPERED),
    ("failed to load CA file '/etc/rauc/keyring.pem' and/or directory '(null)'", "",
     "failed", "keyring"),
    # RAUC 1.13 (the box): rauc install's client prints the service's LastError
    ("Installing `/data/update/download.raucb` failed\n",
     "  0% Installing\nLastError: Compatible mismatch: Expected 'intercom-rpi-arm64' but bundle "
     "manifest has 'other'\n", "refused", b.OTHER_DEVICE),
    ("Installing `/data/update/download.raucb` failed\n",
     "LastError: Version mismatch: Expected at least '0.2.0' but bundle manifest has "
     "'0.1.0'\n", "refused", b.OLDER),
    ("", "LastError: Failed to check bundle payload: bundle payload is corrupted",
     "refused", b.TAMPERED),
    # an I/O error while installing a bundle whose payload was verified just before: the
    # card, not the bundle
    ("", "LastError: Installation error: Failed updating slot rootfs.1: failed to copy image: "
     "Error splicing data: Input/output error", "failed", "rauc"),
    ("", "LastError: Pre-install handler error: the intercom is in a call",
     "failed", "busy"),
    ("Failed to contact rauc service: Could not connect: No such file or directory", "",
     "failed", "rauc"),
])
def test_raucs_words_map_to_one_reason(stderr: str, stdout: str, result: str,
                                       reason: str) -> None:
    got = b.classify(stderr, stdout)
    assert got[:2] == (result, reason), got
    assert "\n" not in got[2] and "rauc-Message" not in got[2]
    assert "809F1510" not in got[2], "OpenSSL's dumped queue is not the message"


def test_rauc_s_own_error_line_is_the_message() -> None:
    _, _, message = b.classify(
        "Installing `/x` failed\n",
        "LastError: Pre-install handler error: the intercom is in a call (ringing)\n")
    assert message == "Pre-install handler error: the intercom is in a call (ringing)"


# ----------------------------------------------------------------------------- the reboot
def at(hh: int, mm: int) -> float:
    t = time.localtime()
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, hh, mm, 0, 0, 0, -1))


@pytest.mark.parametrize("window,hh,mm,inside", [
    (None, 12, 0, True), ("02:00-04:00", 2, 0, True), ("02:00-04:00", 3, 59, True),
    ("02:00-04:00", 4, 0, False), ("02:00-04:00", 1, 59, False),
    ("22:30-01:00", 23, 0, True), ("22:30-01:00", 0, 30, True), ("22:30-01:00", 1, 0, False),
    ("22:30-01:00", 22, 29, False),
])
def test_update_window_in_local_time(window: str | None, hh: int, mm: int,
                                     inside: bool) -> None:
    assert in_window(window, at(hh, mm)) is inside


IDLE = Activity(True, "idle", True)


@pytest.mark.parametrize("act,window,hh,silent,waits", [
    (IDLE, None, 12, None, None),
    (Activity(True, "in_call", True), None, 12, None, "busy (in_call)"),
    (Activity(True, "ringing", True), None, 12, None, "busy (ringing)"),
    (Activity(True, "calling", True), None, 12, None, "busy (calling)"),
    (Activity(True, "unknown", False), None, 12, None, "busy (unknown)"),
    # the PBX is down: the trial boot could not prove the release, so the reboot waits
    (Activity(True, "offline", False), None, 12, None, "not registered"),
    (IDLE, "02:00-04:00", 12, None, "update.window"),
    (IDLE, "02:00-04:00", 3, None, None),
    (Activity(True, "in_call", True), "02:00-04:00", 3, None, "busy"),
    # an intercom that does not answer: nothing to disturb, but give a restart its time
    (Activity(False, "down", False), None, 12, 0.0, "does not answer"),
    (Activity(False, "down", False), None, 12, DOWN_GRACE, None),
])
def test_when_the_box_may_reboot_into_the_new_slot(act: Activity, window: str | None, hh: int,
                                                   silent: float | None,
                                                   waits: str | None) -> None:
    now = at(hh, 0)
    why = reboot_verdict(act, window, now, None if silent is None else now - silent)
    assert (why is None) if waits is None else (why is not None and waits in why), why


# ----------------------------------------------------------------------------- config
MINIMAL = "sip:\n  server: 127.0.0.1\n  username: '5002'\n"


@pytest.mark.parametrize("section,needle", [
    ("update:\n  url: http://u.test/i.raucb\n  ca_file: system\n", "update.url (line 5) must "
     "be an https:// URL"),
    ("update:\n  url: https://me:pw@u.test/i.raucb\n  ca_file: system\n", "update.url (line 5)"
     " must be an https:// URL without user name or password"),
    ("update:\n  url: https://u.test/i.raucb\n", "update.url (line 5) needs update.ca_file"),
    ("update:\n  ca_file: /nonexistent/ca.pem\n", "update.ca_file (line 5) must name the CA"),
    ("update:\n  interval: 30\n", "update.interval (line 5) must be at least 60 seconds"),
    ("update:\n  window: '2:00-2:00'\n", "update.window (line 5) must be a local time window"),
    ("update:\n  window: '02:00-24:00'\n", "update.window (line 5) must be a local time"),
    ("update:\n  max_size: 1000\n", "update.max_size (line 5) must be between"),
    ("update:\n  state_dir: data/update\n", "update.state_dir (line 5) must be an absolute"),
    ("update:\n  keyring: true\n", "update.keyring (line 5) must be str, not a boolean"),
    ("update:\n  trial_register_timeout: 5\n", "update.trial_register_timeout (line 5) must "
     "be at least 30"),
])
def test_update_section_errors_name_the_key_and_line(section: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + section, "intercom.yaml")
    assert needle in str(info.value) and str(info.value).startswith("intercom.yaml: ")


def test_update_section_defaults_and_only_the_card_sets_it(tmp_path: Path) -> None:
    cfg = parse_config(MINIMAL)
    u = cfg.update
    assert (u.url, u.interval, u.window, u.state_dir, u.keyring) == \
        (None, 21600.0, None, "/data/update", "/etc/rauc/keyring.pem")
    assert (u.trial_register_timeout, u.trial_pbx_silence) == (180.0, 600.0)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    boot = parse_boot(MINIMAL + f"update:\n  url: https://u.test/i.raucb\n  ca_file: {ca}\n"
                      "  window: '02:00-04:00'\n")
    assert boot.update.url == "https://u.test/i.raucb" and boot.update.window == "02:00-04:00"
    # a provisioned document cannot point root's updater elsewhere
    with pytest.raises(ConfigError, match=r"update \(line 1\) may only be set in the boot"):
        parse_provisioned("update:\n  url: https://evil.test/x.raucb\n", "https://p/x", boot)
    cfg = parse_provisioned("sip:\n  display_name: Door\n", "https://p/x", boot)
    assert cfg.update == boot.update
