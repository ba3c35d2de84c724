"""The built SD-card image booted in qemu-system-aarch64 (TCG), as close to a Pi as this machine
allows, with a test intercom.yaml on its boot partition and Asterisk in a network namespace that
holds only loopback (the guest reaches it as 10.0.2.2 through QEMU's user network).

- ``-M virt`` through the card's real boot path: Debian's U-Boot (qemu_arm64) runs the card's
  boot.scr, which reads the A/B state on the FAT partition, picks slot A and boots its kernel.
  The kernel's own PL061 GPIO driver with header line names from the device tree
  we boot with. QMP ``system_powerdown`` raises line 3 (GPIO17, the call button) for 100 ms: a
  real edge in the guest. Asterisk must receive the INVITE for ``calls.default_target``; the
  guest's /sys/kernel/debug/gpio must show the registered LED lit and the relay pulsed by the
  DTMF door code. A USB audio device (QEMU usb-audio into a WAV on the host) is played through
  the guest's snd-usb-audio: Asterisk's Playtones tone must be found in the WAV by FFT. (The
  hard power cut and the boot after it: tests/image/test_update.py, during an install.)
- ``-M raspi3b``: the image's own kernel and initrd (from root slot A) and bcm2837-rpi-3-b.dtb
  from its SD card, started directly by QEMU (U-Boot through QEMU's emulated SD host reads at
  ~0.5 MB/s: 66 s for the kernel alone), the card itself on the BCM2835 SD host, networking
  through usb-net: it must register, and the firmware must drive the Pi's pinctrl GPIO chip by
  its line names.

Runs when ``images/out`` holds an image (``./build.sh image``; ``./build.sh test`` builds one).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from devtools.asterisk import PASSWORDS, Asterisk
from devtools.waiting import wait_for

from ..audio import peak_hz, tone_snr_db
from .conftest import BOOT_TIMINGS
from .qemu import (
    Qemu,
    boot_file,
    built_image,
    gpiozero2_folder,
    loopback_namespace,
    power_of_two,
    prepare_card,
    root_file,
    virt_args,
    virt_dtb,
)

pytestmark = [pytest.mark.image,
              pytest.mark.skipif(built_image() is None,
                                 reason="no image in images/out: ./build.sh image")]
VIRT = ["-cpu", "cortex-a72", "-smp", "2", "-m", "1024"]
TONE_HZ = 1000
# 7000: answers, plays a tone, sends the door code as RFC 4733, waits, hangs up; Asterisk's
# verbose log names the channel (PJSIP/5002-...) that runs it.
DIALPLAN = f"""
[intercom](+)
exten => 7000,1,NoOp(door box calling)
 same => n,Answer()
 same => n,Wait(1)
 same => n,Playtones({TONE_HZ})
 same => n,Wait(5)
 same => n,StopPlaytones()
 same => n,SendDTMF(*1,200)
 same => n,Wait(8)
 same => n,Hangup()
"""


def sip_config(pbx: Asterisk) -> dict:
    return {"server": "10.0.2.2", "port": pbx.port, "username": "5002",
            "password": PASSWORDS["5002"], "register_expires": 60, "retry_min": 2,
            "retry_max": 10}


def wav_samples(path: Path, rate: int = 48000) -> np.ndarray:
    """QEMU's wav audiodev writes its header sizes only at exit; the guest was killed, so read
    the 16-bit stereo frames after the 44-byte header ourselves."""
    raw = path.read_bytes()[44:]
    x = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i2").astype(np.float64)
    return x.reshape(-1, 2).mean(axis=1)


def gpio_seen(vm: Qemu, line: str, level: str) -> bool:
    return any(lines.get(line) == level for _, lines in vm.reports("GPIO"))


def pulsed(vm: Qemu, line: str) -> bool:
    """The guest saw ``line`` driven high and, later, low again."""
    levels = [lines.get(line) for _, lines in vm.reports("GPIO")]
    return "out hi" in levels and "out lo" in levels[levels.index("out hi"):]


def chain_text(vm: Qemu, wait: float = 90) -> str:
    """The guest's ``systemd-analyze critical-chain intercom.service`` (a report, not a check:
    systemd-analyze itself can take a minute under TCG)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and vm.alive():
        chain = vm.last("CHAIN")
        if isinstance(chain, str):
            return chain
        time.sleep(1)
    return f"(no critical chain reported within {wait:.0f} s)"


def test_virt_gpio_button_calls_relay_opens_usb_audio_plays(tmp_path: Path) -> None:
    src = built_image()
    assert src is not None
    with loopback_namespace() as ns:
        pbx = Asterisk(netns=ns, media_address="10.0.2.2")
        with open(pbx.dir / "etc" / "extensions.conf", "a") as f:
            f.write(DIALPLAN)
        with open(pbx.dir / "etc" / "modules.conf", "a") as f:  # what 7000 uses, test only
            f.write("load => app_playtones.so\nload => app_senddtmf.so\n")
        pbx.start()
        try:
            config = {
                "sip": sip_config(pbx),
                "calls": {"default_target": "7000", "door_code": "*1"},
                "audio": {"capture": "silence", "playback": "usb"},
                # the call button on line 3 (GPIO17) idles low: QEMU pulls it down and pulses it
                # high; GPIO22 does not exist on this board and must be reported, not fatal
                "gpio": {"buttons": {"call": {"pin": 17, "active_high": True, "pull_up": False,
                                              "bounce_ms": 10},
                                     "hangup": None, "talk": None, "answer": None,
                                     "flat2": {"pin": 22, "target": "5003"}},
                         "relay": {"pin": 26, "seconds": 2}},
                "system": {"hostname": "door-test"},
            }
            # GPIO27 (line 7) stays free for the factory's run under gpiozero 2.x
            img = prepare_card(src, tmp_path, config,
                               extra=gpiozero2_folder(tmp_path, "GPIO27"))
            dtb = virt_dtb(tmp_path, VIRT)
            wav = tmp_path / "speaker.wav"
            console = tmp_path / "console.log"
            # acpi=off: with ACPI, QEMU sends system_powerdown to its ACPI GED device instead of
            # raising the PL061's line 3. A hard power cut and the boot after it are in
            # test_update.py (cut during an install), which shares nothing with this machine.
            args = [*virt_args(img, console, dtb=dtb, machine=VIRT), "-no-reboot",
                    "-device", "qemu-xhci", "-device", "usb-audio,audiodev=snd0",
                    "-audiodev", f"wav,id=snd0,path={wav},out.frequency=48000,"
                    "out.channels=2,out.format=s16"]
            vm = Qemu(args, console, ns, qmp=tmp_path / "qmp.sock").start()
            try:
                wait_for(lambda: pbx.registered("5002") or not vm.alive(), 900, 2,
                         "the booted image to register")
                assert vm.alive(), vm.console()[-3000:]
                registered_after = time.monotonic() - vm.started
                wait_for(lambda: "INTERCOM-SELFTEST" in vm.console(), 60, 1, "the self-test")
                assert "INTERCOM-SELFTEST: root is read-only" in vm.console()
                boot = wait_for(lambda: vm.last("BOOT"), 60, 1, "the boot report")
                # U-Boot's script chose slot A and took one attempt; Linux reads the same state
                # files RAUC's uboot backend writes
                assert boot["slot"] == "A" and boot["data_mounted"], boot
                assert boot["abenv"]["BOOT_ORDER"] == "A B", boot
                wait_for(lambda: gpio_seen(vm, "GPIO5", "out hi"), 60, 0.5,
                         "the registered LED (GPIO5) to be lit in the guest")
                check_gpio_call_and_audio(vm, pbx, wav)
                BOOT_TIMINGS.append(f"virt boot critical chain:\n{chain_text(vm)}")
            finally:
                vm.power_off()
            line = ("image boot (QEMU virt, TCG, U-Boot): QEMU start -> registered in Asterisk: "
                    f"{registered_after:.0f} s (first boot)")
            print(line)
            BOOT_TIMINGS.append(line)
        finally:
            pbx.cleanup()


def check_gpio_call_and_audio(vm: Qemu, pbx: Asterisk, wav: Path) -> None:
    gz2 = wait_for(lambda: vm.last("GZ2"), 120, 1, "the gpiozero 2.x run in the guest")
    assert gz2["gpiozero"].startswith("2.") and "/gpiozero2/" in gz2["from"], gz2
    assert (gz2["led_on"], gz2["led_off"], gz2["after_close"]) == ("out hi", "out lo", "free")
    assert gz2["button"] == "in lo" and gz2["button_pressed"] is False, gz2
    status = wait_for(lambda: (vm.last("STATUS") or {}).get("gpio") and vm.last("STATUS"), 60,
                      0.5, "the intercom's status on the console")
    gpio = status["gpio"]
    assert gpio["factory"] == "gpiod" and not gpio["simulated"], status
    # the host firewall the guest's kernel holds: inbound dropped, SIP/RTP only from the PBX
    fw = wait_for(lambda: vm.last("FIREWALL"), 120, 0.5, "the guest's firewall listing")
    assert fw["loaded"] and "policy drop" in fw["rules"], fw
    assert "10.0.2.2" in fw["rules"], fw["rules"]
    assert any("GPIO22" in e and "flat2" in e for e in gpio["errors"]), gpio
    assert len(gpio["errors"]) == 1, gpio  # every other line of the profile resolved by name
    # the call button: a real 100 ms edge on PL061 line 3
    reply = vm.qmp("system_powerdown")
    assert "return" in reply, reply
    wait_for(lambda: re.search(r"Executing \[7000@(?:door|intercom):1\] NoOp\(\"PJSIP/5002-",
                               pbx.log_text()), 30, 0.5,
             "Asterisk to receive the INVITE from 5002 for calls.default_target (7000)")
    wait_for(lambda: gpio_seen(vm, "GPIO19", "out hi"), 30, 0.5, "the in-call LED (GPIO19)")
    # the door code, sent by Asterisk as RFC 4733 events, pulses the relay (GPIO26)
    wait_for(lambda: gpio_seen(vm, "GPIO26", "out hi"), 40, 0.3,
             "the relay line (GPIO26) to go high in the guest")
    wait_for(lambda: pulsed(vm, "GPIO26"), 30, 0.3, "the relay line to drop again")
    after = wait_for(lambda: next((st for _, st in vm.reports("STATUS")
                                   if st.get("door_openings") == 1 and st.get("state") == "idle"),
                                  None), 60, 0.5, "the call to end with one door opening")
    realtime = after.get("realtime") or {}
    assert realtime.get("active") is True, realtime  # SCHED_FIFO took in the service
    # the tone Asterisk played, through the guest's snd-usb-audio into the host's WAV
    x = wav_samples(wav)
    assert len(x) > 48000, f"the USB speaker played only {len(x)} frames"
    loud = np.abs(x) > 1000
    assert loud.any(), "the USB speaker stayed silent"
    first = int(np.argmax(loud))
    # 1 s from 1.5 s after the tone began: under TCG on a busy host the guest's first second of
    # USB playback can underrun (seen: 16-18 dB SNR there, 31 dB from then on); a Pi runs at
    # full speed, and the start of playback is tested on the host's ALSA (tests/integration)
    assert len(x) - first >= 48000 * 3, "the tone lasted less than 3 s"
    segment = x[first + 72000: first + 72000 + 48000]
    assert abs(peak_hz(segment, 48000) - TONE_HZ) < 10, peak_hz(segment, 48000)
    assert tone_snr_db(segment, TONE_HZ, 48000) > 20


def test_raspi3b_boots_from_its_sd_card_and_registers(tmp_path: Path) -> None:
    src = built_image()
    assert src is not None
    with loopback_namespace() as ns:
        pbx = Asterisk(netns=ns, media_address="10.0.2.2")
        pbx.start()
        try:
            # the image's defaults: audio on a USB sound card, which this board has not
            img = prepare_card(src, tmp_path, {"sip": sip_config(pbx)},
                               size=power_of_two(src.stat().st_size))
            kernel = root_file(src, "/boot/vmlinuz", tmp_path)
            initrd = root_file(src, "/boot/initrd.img", tmp_path)
            dtb = boot_file(img, "bcm2837-rpi-3-b.dtb", tmp_path)
            # mkimage's script image: a 64-byte header, then the length list (one length and a
            # terminating zero, 4 bytes each), then the script's text
            script = boot_file(img, "boot.scr", tmp_path).read_bytes()[72:].decode()
            # what boot.scr gives a Pi's kernel: the mini UART (the header's serial console) is
            # the last console=, so it is /dev/console: where the services' messages go
            pi = re.search(r'setenv abconsole "(console=tty1 console=ttyS1,115200)', script)
            assert pi, "boot.scr does not put the Pi's console on the mini UART (ttyS1)"
            cmdline = (f"{pi.group(1)} root=PARTUUID=1c0ffee0-02 rootfstype=ext4 ro rootwait "
                       "rauc.slot=A")
            console = tmp_path / "console.log"
            # serial 0 = PL011 (Bluetooth on a real Pi), serial 1 = the mini UART (ttyS1)
            # QEMU's BCM2835 watchdog resets the machine as soon as it is started (it models
            # no countdown): keep its driver out in emulation only
            append = cmdline + " modprobe.blacklist=bcm2835_wdt"
            args = ["-M", "raspi3b", "-kernel", str(kernel), "-initrd", str(initrd),
                    "-dtb", str(dtb), "-append", append,
                    "-drive", f"file={img},format=raw,if=sd",
                    "-netdev", "user,id=n0", "-device", "usb-net,netdev=n0",
                    "-nographic", "-monitor", "none", "-serial", "null",
                    "-serial", f"file:{console}", "-no-reboot"]
            vm = Qemu(args, console, ns).start()
            try:
                wait_for(lambda: pbx.registered("5002") or not vm.alive(), 1500, 2,
                         "the raspi3b guest to register")
                assert vm.alive(), vm.console()[-3000:]
                took = time.monotonic() - vm.started
                assert "mmc0" in vm.console() or "mmcblk0" in vm.console()
                status = wait_for(lambda: (vm.last("STATUS") or {}).get("gpio")
                                  and vm.last("STATUS"), 120, 1, "the status on the console")
                gpio = status["gpio"]
                assert gpio["factory"] == "gpiod" and gpio["errors"] == [], gpio
                wait_for(lambda: gpio_seen(vm, "GPIO5", "out hi"), 60, 0.5,
                         "the registered LED (GPIO5) on the BCM2835 pinctrl chip")
                assert status["audio"]["state"] == "error"
                assert "no USB sound card" in (status["audio"]["error"] or "")
                wait_for(lambda: gpio_seen(vm, "GPIO12", "out hi"), 60, 0.2,
                         "the error LED (GPIO12) to blink: no sound card")
                line = (f"image boot (QEMU raspi3b, TCG): QEMU start -> registered: {took:.0f} s"
                        f"\nraspi3b critical chain:\n{chain_text(vm)}")
                print(line)
                BOOT_TIMINGS.append(line)
            finally:
                vm.power_off()
        finally:
            pbx.cleanup()
