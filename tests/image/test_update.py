"""A box's life after it is screwed to the wall, in one QEMU virt machine booting the built card
through its real boot path (Debian's U-Boot, the card's boot.scr and A/B state files, RAUC 1.13
with its ``uboot`` backend), with Asterisk and an HTTPS server (provisioning and updates) in a
network namespace that holds only loopback (the guest reaches both as 10.0.2.2).

One machine, in this order (each step needs the one before it):
1. v1 boots from slot A, is provisioned by its MAC over HTTPS with the pinned CA (the SIP password
   lives only on the server) and registers.
2. Bundles the box must refuse, pulled from ``update.url`` one after the other: signed by another
   key, older than v1, one payload byte flipped. Each refusal is in ``status``.
3. A signed v2 is pulled and installed while idle; a button press during the install still calls,
   the reboot waits for that call's end; v2 boots from slot B, is marked good, registers from the
   provisioned configuration kept on /data (the provisioning server is gone by then) and reports v2.
   The call plays through a USB sound card: the box's speaker is ``audio: playback: usb`` and
   the machine has QEMU's usb-audio (behind qemu-xhci) played into a WAV on the host
   (tests/image/usb_audio.py); the guest's snd-usb-audio drives it. The box must have found the
   card by itself (its status names the device ``usb`` resolved to, and it is the guest's only
   card in /proc/asound, whose playback PCM is open in the call), and Asterisk's 1000 Hz tone
   must be in the WAV by FFT. Every later boot starts from this configuration, so both machines
   have the device (without it the box runs, but with an audio error, "no USB sound card ...",
   and refuses calls).
4. v3, whose intercom cannot start, is pulled; the power is cut while RAUC writes it (QEMU killed):
   the box boots v2 again and registers.
5. The box pulls v3 again and installs it. v3's ``intercom`` command cannot start, and with it
   neither can its health check (one program): intercom-health.service gives up after 5 tries,
   and intercom-health-failed.service (shell and rauc only) marks the trial slot bad and
   reboots; the box is back on v2 by itself, registered, and v2's check reports the rollback.

What this does not prove: a Pi's own firmware starting U-Boot (rpi_arm64) from the FAT partition,
and SD-card writes under a real power cut (hw/BOARDS.md); nor a real USB dongle: QEMU's
usb-audio runs on QEMU's clock (no crystal of its own, no drift against the Pi), with no real USB
timing (emulated isochronous transfers: nothing late or lost on a bus), and playback only (the
box's microphone here is ``silence``; the card loop through a kernel driver both ways is
test_boot's HD Audio card).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devtools import bundles
from devtools.asterisk import PASSWORDS, Asterisk
from devtools.certificate import web_certificate
from devtools.paths import CACHE, REPO
from devtools.waiting import wait_for

from .conftest import BOOT_TIMINGS
from .qemu import (
    Qemu,
    built_image,
    image_version,
    loopback_namespace,
    mtools,
    prepare_card,
    root_ext4,
    uboot_qemu,
    virt_args,
    virt_dtb,
)
from .usb_audio import (
    open_playback,
    sound_cards,
    tone_after,
    usb_audio_args,
    usb_card,
    wav_samples,
)

pytestmark = [pytest.mark.image,
              pytest.mark.timeout(1800),  # a boot and its checks; the suite's 600 s is for one test
              pytest.mark.skipif(built_image() is None or not uboot_qemu().exists(),
                                 reason="no A/B image in images/out: ./build.sh image")]
VIRT = ["-cpu", "cortex-a72", "-smp", "2", "-m", "1024"]
MAC = "52:54:00:c0:ff:ee"
PORT = 8443
TONE_HZ = 1000
# Asterisk's tone in the USB speaker's WAV, from 1.5 s after it began (under TCG the guest's
# first second of USB playback can underrun; the start of playback is tested on the host's ALSA
# in tests/integration): the SNR of 2 s, and the share of clean 20 ms frames to the tone's end.
# The call runs during a RAUC install under TCG: the guest's USB playback falls behind and what
# it did not deliver is missing from the WAV (51-55 s of frames for the 60 s call, no silence),
# so each gap is a phase jump: a second holding one reads 12-17 dB, a clean one 31 dB. Seen in 3
# runs: SNR 28.0-31.0 dB over the 2 s, clean frames 97.2-98.3 %; the bounds leave room for gaps
# falling in the 2 s (a wrong or absent tone reads below -30 dB and 0 % clean).
SKIP_S, MEASURE_S = 1.5, 2.0
MIN_SNR_DB = 10
MIN_CLEAN = 0.5
# 7100: answers and stays in the call for 60 s with a tone (RTP: the box ends a call without
# media after media.timeout), then hangs up itself at priority 6
DIALPLAN = f"""
[intercom](+)
exten => 7100,1,NoOp(door box calling during an update)
 same => n,Answer()
 same => n,Playtones({TONE_HZ})
 same => n,Wait(60)
 same => n,StopPlaytones()
 same => n,Hangup()
"""


def bump(version: str, patch: int) -> str:
    """``version`` with ``patch`` added to its last number; below x.y.0: x.(y-1).99, or
    0.0.0-old for 0.0.x."""
    major, minor, micro = (int(x) for x in version.split("-")[0].split("."))
    if micro + patch >= 0:
        return f"{major}.{minor}.{micro + patch}"
    return f"{major}.{minor - 1}.99" if minor else f"{major}.0.0-old"


@contextmanager
def https_server(ns: str, folder: Path, tmp: Path) -> Iterator[Path]:
    """devtools.https_files in the namespace; yields its request log."""
    cert = web_certificate(["10.0.2.2"], folder=tmp / "pki")
    log = tmp / "https.log"
    log.touch()
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m",
                             "devtools.https_files", str(folder), "--cert", str(cert.cert),
                             "--key", str(cert.key), "--port", str(PORT), "--log", str(log)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield log
    finally:
        proc.kill()
        proc.wait()


def served(log: Path, name: str) -> list[dict]:
    return [r for r in (json.loads(x) for x in log.read_text().splitlines())
            if r["path"].split("?")[0].endswith(name)]


def serve(folder: Path, name: str, src: Path | None) -> None:
    """Puts ``src`` at ``folder/name`` atomically (a hard link, then a rename); None removes."""
    dest = folder / name
    if src is None:
        dest.unlink(missing_ok=True)
        return
    tmp = dest.with_suffix(".new")
    tmp.unlink(missing_ok=True)
    tmp.hardlink_to(src)
    tmp.replace(dest)


def update_last(vm: Qemu) -> dict:
    return ((vm.last("STATUS") or {}).get("update") or {}).get("last") or {}


def boots(vm: Qemu) -> list[dict]:
    return [b for _, b in vm.reports("BOOT")]


def test_provisioned_box_refuses_bad_bundles_updates_survives_a_power_cut_and_rolls_back(
        tmp_path: Path) -> None:
    src = built_image()
    assert src is not None
    v1 = image_version(src)
    v2, v3 = bump(v1, 1), bump(v1, 2)
    keys = tmp_path / "keys"
    # the build's own signing pair (build.sh signing_key): the image carries its certificate
    key = Path(os.environ.get("INTERCOM_SIGNING_KEY") or CACHE / "keys" / "dev.key.pem")
    cert = Path(os.environ.get("INTERCOM_SIGNING_CERT") or CACHE / "keys" / "dev.cert.pem")
    assert key.exists() and cert.exists(), "./build.sh image made no signing key"
    other_key, other_cert = bundles.make_key_pair(keys, "someone else")
    root = root_ext4(src)
    www = tmp_path / "www"
    (www / "prov").mkdir(parents=True)
    (www / "update").mkdir()
    made = tmp_path / "bundles"
    # small bundles for the refusals (each is refused before a byte is written)
    tiny = made / "tiny.ext4"
    made.mkdir()
    (made / "tiny").mkdir()
    (made / "tiny" / "noise").write_bytes(os.urandom(256 * 1024))  # squashfs needs > 4 KiB
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(made / "tiny"), str(tiny), "4M"],
                   check=True)
    refusals = {
        "signed by another key": bundles.make_bundle(tiny, made / "other.raucb", bump(v1, 10),
                                                     other_key, other_cert),
        "older than installed": bundles.make_bundle(tiny, made / "old.raucb", bump(v1, -1),
                                                    key, cert),
        "tampered": bundles.tamper(bundles.make_bundle(tiny, made / "t.raucb", bump(v1, 11),
                                                       key, cert), made / "tampered.raucb"),
    }
    good = bundles.make_bundle(root, made / "v2.raucb", v2, key, cert)
    broken = bundles.make_bundle(root, made / "v3.raucb", v3, key, cert, files={
        "/usr/local/bin/intercom": "#!/bin/sh\necho 'v3 cannot start (on purpose)' >&2\nexit 1\n"})

    with loopback_namespace() as ns, https_server(ns, www, tmp_path) as log:
        pbx = Asterisk(netns=ns, media_address="10.0.2.2")
        with open(pbx.dir / "etc" / "extensions.conf", "a") as f:
            f.write(DIALPLAN)
        with open(pbx.dir / "etc" / "modules.conf", "a") as f:  # what 7100 uses, test only
            f.write("load => app_playtones.so\n")
        pbx.start()
        try:
            ca = web_certificate(["10.0.2.2"], folder=tmp_path / "pki").ca
            mac = MAC.replace(":", "")
            # the server's document: everything SIP, the password only here
            (www / "prov" / f"{mac}.yaml").write_text(json.dumps({"sip": {
                "server": "10.0.2.2", "port": pbx.port, "username": "5002",
                "password": PASSWORDS["5002"], "register_expires": 60, "retry_min": 2,
                "retry_max": 10}}))
            config = {
                "provisioning": {"url": f"https://10.0.2.2:{PORT}/prov/{{mac}}.yaml",
                                 "ca_file": "/boot/firmware/site-ca.pem", "interval": 60,
                                 "retry": 5},
                "update": {"url": f"https://10.0.2.2:{PORT}/update/intercom.raucb",
                           "ca_file": "/boot/firmware/site-ca.pem", "interval": 60},
                "calls": {"default_target": "7100"},
                # the speaker is the USB card the box finds by itself (QEMU's usb-audio); its
                # playback is checked after the call. Every later boot starts from this
                # configuration: without a USB card the box reports an audio error and
                # refuses calls.
                "audio": {"capture": "silence", "playback": "usb"},
                "gpio": {"buttons": {"call": {"pin": 17, "active_high": True,
                                              "pull_up": False, "bounce_ms": 10},
                                     "hangup": None, "talk": None, "answer": None}},
            }
            img = prepare_card(src, tmp_path, config)
            mtools(img, "mcopy", "-o", str(ca), "::site-ca.pem")
            dtb = virt_dtb(tmp_path, VIRT)
            console = tmp_path / "console.log"
            speaker = tmp_path / "usb-speaker.wav"
            args = [*virt_args(img, console, dtb=dtb, mac=MAC, machine=VIRT),
                    *usb_audio_args(speaker)]
            vm = Qemu(args, console, ns, qmp=tmp_path / "qmp.sock").start()
            try:
                # 1. v1 from slot A, provisioned, registered
                wait_for(lambda: pbx.registered("5002") or not vm.alive(), 900, 2,
                         "v1 to be provisioned and register")
                started = vm.started
                BOOT_TIMINGS.append(f"update test: v1 registered {time.monotonic() - started:.0f}"
                                    " s after QEMU start (provisioned by MAC)")
                assert boots(vm)[-1]["slot"] == "A" and boots(vm)[-1]["version"] == v1
                st = wait_for(lambda: (vm.last("STATUS") or {}).get("provisioning"), 60, 1,
                              "the provisioning status")
                assert st.get("source") == "server", st
                # the speaker: ``usb`` found (else an audio error, and the button refused; a
                # card that enumerates after the intercom started is probed again every 10 s)
                try:
                    wait_for(lambda: ((vm.last("STATUS") or {}).get("audio") or {})
                             .get("state") == "ok", 90, 1, "the box's USB speaker")
                except AssertionError:
                    raise AssertionError("the box's USB speaker: "
                                         f"{(vm.last('STATUS') or {}).get('audio')}") from None
                applied = st.get("applied")
                assert served(log, f"{mac}.yaml"), "the box did not ask for its MAC's file"
                # from here on the provisioning server has nothing: the box lives on its cache
                serve(www / "prov", f"{mac}.yaml", None)

                # 2. refusals, one per pull
                for reason, bundle in refusals.items():
                    serve(www / "update", "intercom.raucb", bundle)
                    last = wait_for(lambda r=reason: update_last(vm).get("reason") == r
                                    and update_last(vm), 180, 1, f"the box to refuse: {reason}")
                    assert last["result"] in ("refused", "failed"), last
                    assert boots(vm)[-1]["slot"] == "A"

                # 3. v2: installed while idle, a call during the install, reboot after it
                t0 = time.monotonic()
                serve(www / "update", "intercom.raucb", good)
                wait_for(lambda: f"installing {v2} into slot B" in vm.console(), 600, 1,
                         "the install of v2 to start")
                time.sleep(20)  # RAUC has passed its pre-install handler and is writing slot B
                reply = vm.qmp("system_powerdown")  # the call button: a real edge on GPIO17
                assert "return" in reply, reply
                wait_for(lambda: re.search(r"Executing \[7100@(?:door|intercom):1\]",
                                           pbx.log_text()), 60, 0.5,
                         "the button pressed during the install to call 7100")
                call_started = time.monotonic()
                during = f"{v2} installed in slot B" not in vm.console()
                wait_for(lambda: update_last(vm).get("result") == "installed", 600, 2,
                         "v2 to be installed")
                installed_after = time.monotonic() - t0
                # the call goes on: the reboot waits for the dial plan's own hang-up (60 s)
                wait_for(lambda: len(boots(vm)) >= 2, 900, 2, "the reboot into v2")
                assert time.monotonic() - call_started >= 55, "rebooted during the call"
                # the dial plan reached its own Hangup(): the box never cut the call short
                assert re.search(r"Executing \[7100@(?:door|intercom):6\] Hangup",
                                 pbx.log_text()), "the call did not last its 60 s"
                check_usb_speaker(vm, speaker)
                when = "during" if during else "before"
                BOOT_TIMINGS.append(f"update test: the button pressed {when} the install "
                                    "called; the reboot waited for that call")
                t_reboot = time.monotonic()
                wait_for(lambda: boots(vm)[-1]["slot"] == "B" and (vm.last("STATUS") or {})
                         .get("registered"), 900, 2, "v2 to register from slot B")
                BOOT_TIMINGS.append(
                    f"update test: v2 download+install {installed_after:.0f} s; v2's boot "
                    f"report -> registered {time.monotonic() - t_reboot:.0f} s")
                assert boots(vm)[-1]["version"] == v2
                # the console still holds v1's last STATUS lines: wait for v2's own
                wait_for(lambda: (vm.last("STATUS") or {}).get("version") == v2, 120, 1,
                         "status to name the release v2")
                prov = (vm.last("STATUS") or {}).get("provisioning") or {}
                # /data kept the provisioned document over the update (the server answers 404)
                assert prov.get("cache") == "data partition" and prov.get("applied") == applied, \
                    prov
                wait_for(lambda: update_last(vm).get("result") == "ok"
                         and update_last(vm).get("version") == v2, 600, 2,
                         "v2 to be marked good")

                # 4. v3 pulled; the power is cut while RAUC writes it
                serve(www / "update", "intercom.raucb", broken)
                wait_for(lambda: f"installing {v3} into slot A" in vm.console(), 600, 1,
                         "the install of v3 to start")
                time.sleep(10)  # RAUC is writing slot A (it marked it bad before the first byte)
                assert f"{v3} installed in slot" not in vm.console(), "the install was too quick"
                vm.power_off()
            finally:
                vm.power_off()

            console2 = tmp_path / "console2.log"
            vm = Qemu([*virt_args(img, console2, dtb=dtb, mac=MAC, machine=VIRT),
                       *usb_audio_args(tmp_path / "usb-speaker2.wav")], console2, ns,
                      qmp=tmp_path / "qmp2.sock").start()
            try:
                wait_for(lambda: vm.last("BOOT") and (vm.last("STATUS") or {})
                         .get("registered"), 900, 2, "the box to come back after the power cut")
                after_cut = vm.last("BOOT")
                assert after_cut["slot"] == "B" and after_cut["version"] == v2, after_cut
                # 5. v3 again, to the end: its trial fails and the box returns to v2 by itself
                wait_for(lambda: any(b["version"] == v3 for b in boots(vm)), 1200, 2,
                         "the box to boot v3")
                wait_for(lambda: boots(vm)[-1]["version"] == v2
                         and (vm.last("STATUS") or {}).get("registered"), 900, 2,
                         "the rollback to v2")
                last = wait_for(lambda: update_last(vm).get("result") == "rolled_back"
                                and update_last(vm), 300, 2, "the rollback in status")
                assert last["version"] == v3, last
                assert boots(vm)[-1]["slot"] == "B"
                prov = (vm.last("STATUS") or {}).get("provisioning") or {}
                assert prov.get("cache") == "data partition" and prov.get("applied") == applied, \
                    prov
                assert "INTERCOM-HEALTH: the health check cannot run on slot A (a trial)" in \
                    vm.console(), "the trial slot was not given up by intercom-health-failed"
                assert pbx.registered("5002")
            finally:
                vm.power_off()
        finally:
            pbx.cleanup()


def check_usb_speaker(vm: Qemu, speaker: Path) -> None:
    """After the call: the box resolved ``audio: usb`` to the guest's USB card (its status in
    the call names ``plughw:CARD=<id>,DEV=0`` with the id the guest's /proc/asound gives its
    only card, whose playback PCM was open in the call), and Asterisk's tone came out of it,
    through snd-usb-audio and QEMU's usb-audio, into the host's WAV."""
    in_call = [st for _, st in vm.reports("STATUS") if st.get("state") == "in_call"]
    assert in_call, "no status was reported in the call"
    audio = in_call[-1]["audio"]
    assert audio["playback"] == "usb" and audio["state"] == "ok", audio
    sounds = [s for _, s in vm.reports("SOUND")]
    cards = [(c, s) for c, s in ((usb_card(s), s) for s in sounds) if c is not None]
    assert cards, f"the guest found no USB sound card: {sounds[-1:] or 'no SOUND report'}"
    (number, ident), sound = cards[-1]
    assert len(sound_cards(sound)) == 1, f"not the guest's only card: {sound['cards']}"
    assert audio.get("playback_device") == f"plughw:CARD={ident},DEV=0", \
        f"the device the box says it opened for `usb`, the guest's card being {ident}: {audio}"
    assert audio.get("capture_device") is None, audio  # `silence` is no device
    opened = [p for p in (open_playback(s, number) for s in sounds) if p is not None]
    assert opened, f"the USB card {ident} (card {number}) was never open for playback"
    x = wav_samples(speaker)
    tone = tone_after(x, TONE_HZ, SKIP_S, MEASURE_S)
    line = (f"update test, USB speaker (QEMU usb-audio, guest snd-usb-audio): audio: usb -> "
            f"{audio['playback_device']} (status; card {number}), open in the call with "
            + ", ".join(opened[-1].splitlines()) +
            f"; the tone's frames span {tone['played_s']:.1f} s (the call: 60 s); from "
            f"{SKIP_S} s for {MEASURE_S} s: {tone['peak_hz']:.1f} Hz, SNR "
            f"{tone['snr_db']:.1f} dB; to its end: clean 20 ms frames {tone['clean']:.1%}, "
            f"SNR of each second ({tone['seconds']}) median {tone['median_snr_db']:.1f} dB, "
            f"worst {tone['worst_snr_db']:.1f} dB")
    print(line)
    BOOT_TIMINGS.append(line)
    assert abs(tone["peak_hz"] - TONE_HZ) < 10, line
    assert tone["snr_db"] > MIN_SNR_DB, line
    assert tone["clean"] >= MIN_CLEAN, line
