"""The built SD-card image booted in qemu-system-aarch64 (TCG), as close to a Pi as this machine
allows, with a test intercom.yaml on its boot partition and Asterisk in a network namespace that
holds only loopback (the guest reaches it as 10.0.2.2 through QEMU's user network).

- ``-M virt`` through the card's real boot path: Debian's U-Boot (qemu_arm64) runs the card's
  boot.scr, which reads the A/B state on the FAT partition, picks slot A and boots its kernel.
  The kernel's own PL061 GPIO driver with header line names from the device tree
  we boot with. QMP ``system_powerdown`` raises line 3 (GPIO17, the call button) for 100 ms: a
  real edge in the guest. Asterisk must receive the INVITE for ``calls.default_target``; the
  guest's /sys/kernel/debug/gpio must show the registered LED lit and the relay pulsed by the
  DTMF door code. The box's microphone and speaker are an Intel HD Audio card (QEMU's
  intel-hda + hda-duplex, line-in and line-out) driven by the guest's kernel driver
  (snd-hda-intel, snd-hda-codec-generic), so the call runs on the card loop through a kernel
  sound driver: QEMU's ``-audiodev alsa`` opens an ALSA device on the host that alsa-lib's jack
  plugin puts on a jackd (devtools/jack_card.py), where the room (a JACK client) plays a tone
  into the line-in and records the line-out. Asterisk's Playtones tone must be found by FFT in
  the room's recording, the room's tone in Asterisk's recording of what the box sent, and the
  box's status must show the call ran on the card. (The hard power cut and the boot after it:
  tests/image/test_update.py, during an install. A USB sound card, the guest's snd-usb-audio
  and ``audio: usb`` found by the box itself: also there, playback only.)
- ``-M raspi3b``: the image's own kernel and initrd (from root slot A) and bcm2837-rpi-3-b.dtb
  from its SD card, started directly by QEMU (U-Boot through QEMU's emulated SD host reads at
  ~0.5 MB/s: 66 s for the kernel alone), the card itself on the BCM2835 SD host, networking
  through usb-net: it must register, and the firmware must drive the Pi's pinctrl GPIO chip by
  its line names.

Runs when ``images/out`` holds an image (``./build.sh image``; ``./build.sh test`` builds one).
"""

from __future__ import annotations

import re
import shutil
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from devtools import jack_card
from devtools.asterisk import PASSWORDS, Asterisk
from devtools.waiting import wait_for

from ..audio import peak_hz, tone_frames, tone_snr_db, wav_array
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
              pytest.mark.timeout(1800),  # a boot and its checks; the suite's 600 s is for one test
              pytest.mark.skipif(built_image() is None,
                                 reason="no image in images/out: ./build.sh image")]
VIRT = ["-cpu", "cortex-a72", "-smp", "2", "-m", "1024"]
TONE_HZ = 1000
MIC_HZ = 700  # the room's voice into the guest's line-in
HDA_PCM = "hda"  # the host's ALSA device (jack plugin) behind QEMU's hda-duplex
# snd-hda-intel names QEMU's ICH6 HD Audio controller "Intel"; the box opens it by that id,
# through plug (8 kHz mono over what the codec takes)
GUEST_CARD = "plughw:CARD=Intel,DEV=0"
# QEMU's alsa audiodev at the room's rate, mono, 5 ms periods polled every 1 ms, jackd on 5 ms
# cycles at real-time priority, so that the host's side adds little jitter to the emulated
# card's periods (jackd's cycles: p99 5.1 ms here; the jitter the loop sees is QEMU's and the
# guest's: docs/notes/card-path.md). The jack plugin refuses QEMU's default 93 ms buffer.
HDA_AUDIODEV = (f"alsa,id=snd0,in.dev={HDA_PCM},out.dev={HDA_PCM},"
                f"in.frequency={jack_card.RATE},out.frequency={jack_card.RATE},"
                "in.channels=1,out.channels=1,in.buffer-length=40000,in.period-length=5000,"
                "out.buffer-length=40000,out.period-length=5000,timer-period=1000")
JACK_PERIOD = 40  # jackd's cycle: 5 ms


def dialplan(sent: Path) -> str:
    """7000: answers, records what the box sends into ``sent`` (a path as Asterisk sees it),
    plays a tone, sends the door code as RFC 4733, waits, hangs up; Asterisk's verbose log names
    the channel (PJSIP/5002-...) that runs it."""
    return f"""
[intercom](+)
exten => 7000,1,NoOp(door box calling)
 same => n,Answer()
 same => n,MixMonitor({sent.with_name("call.wav")},r({sent}))
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


def write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    """``x`` (int16 scale) as a mono 16-bit WAV, kept beside the console log."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(x, -32768, 32767).astype("<i2").tobytes())


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


def test_virt_gpio_button_calls_relay_opens_hda_card_carries_audio(tmp_path: Path) -> None:
    src = built_image()
    assert src is not None
    why = jack_card.missing()
    assert why is None, f"the HD Audio card's host side: {why} (./build.sh installs it)"
    with loopback_namespace() as ns:
        pbx = Asterisk(netns=ns, media_address="10.0.2.2")
        sent = pbx.inner / "spool" / "box-sent.wav"  # as Asterisk (in its root) sees it
        with open(pbx.dir / "etc" / "extensions.conf", "a") as f:
            f.write(dialplan(sent))
        with open(pbx.dir / "etc" / "modules.conf", "a") as f:  # what 7000 uses, test only
            f.write("load => app_playtones.so\nload => app_senddtmf.so\n"
                    "load => app_mixmonitor.so\n")
        pbx.start()
        # the room, up before QEMU opens the host's device on it
        jackd, jack_env = jack_card.start(tmp_path, HDA_PCM, "room:speaker", "room:mic",
                                          JACK_PERIOD, realtime=20)
        room = jack_card.Room(jack_env["JACK_DEFAULT_SERVER"], jack_card.tone(MIC_HZ, 180))
        try:
            room.start()
            config = {
                "sip": sip_config(pbx),
                "calls": {"default_target": "7000", "door_code": "*1"},
                "audio": {"capture": GUEST_CARD, "playback": GUEST_CARD},
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
            console = tmp_path / "console.log"
            # acpi=off: with ACPI, QEMU sends system_powerdown to its ACPI GED device instead of
            # raising the PL061's line 3. A hard power cut and the boot after it are in
            # test_update.py (cut during an install), which shares nothing with this machine.
            args = [*virt_args(img, console, dtb=dtb, machine=VIRT), "-no-reboot",
                    "-device", "intel-hda", "-device", "hda-duplex,audiodev=snd0",
                    "-audiodev", HDA_AUDIODEV]
            vm = Qemu(args, console, ns, qmp=tmp_path / "qmp.sock", env=jack_env).start()
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
                check_gpio_call_and_audio(vm, pbx, room,
                                          pbx.dir / sent.relative_to(pbx.inner))
                BOOT_TIMINGS.append(f"virt boot critical chain:\n{chain_text(vm)}")
            finally:
                vm.power_off()
            line = ("image boot (QEMU virt, TCG, U-Boot): QEMU start -> registered in Asterisk: "
                    f"{registered_after:.0f} s (first boot)")
            print(line)
            BOOT_TIMINGS.append(line)
        finally:
            room.close()
            jack_card.stop(jackd)
            pbx.cleanup()


def check_gpio_call_and_audio(vm: Qemu, pbx: Asterisk, room: jack_card.Room, sent: Path
                              ) -> None:
    gz2 = wait_for(lambda: vm.last("GZ2"), 120, 1, "the gpiozero 2.x run in the guest")
    assert gz2["gpiozero"].startswith("2.") and "/gpiozero2/" in gz2["from"], gz2
    assert (gz2["led_on"], gz2["led_off"], gz2["after_close"]) == ("out hi", "out lo", "free")
    assert gz2["button"] == "in lo" and gz2["button_pressed"] is False, gz2
    status = wait_for(lambda: (vm.last("STATUS") or {}).get("gpio") and vm.last("STATUS"), 60,
                      0.5, "the intercom's status on the console")
    gpio = status["gpio"]
    assert gpio["factory"] == "gpiod" and not gpio["simulated"], status
    # the guest's kernel found the HD Audio card (snd-hda-intel, loaded by udev for the PCI
    # device) and the box can open it by its id
    sound = wait_for(lambda: vm.last("SOUND"), 60, 0.5, "the guest's sound cards")
    assert "HDA-Intel" in sound.get("cards", ""), sound
    assert status["audio"]["state"] == "ok", status["audio"]
    # the host firewall the guest's kernel holds: inbound dropped, SIP/RTP only from the PBX
    fw = wait_for(lambda: vm.last("FIREWALL"), 120, 0.5, "the guest's firewall listing")
    assert fw["loaded"] and "policy drop" in fw["rules"], fw
    assert "10.0.2.2" in fw["rules"], fw["rules"]
    assert any("GPIO22" in e and "flat2" in e for e in gpio["errors"]), gpio
    assert len(gpio["errors"]) == 1, gpio  # every other line of the profile resolved by name
    room.play()  # the room's voice into the line-in from now on, its recording of the line-out
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
    played = room.pause()
    # kept for a failure's inspection: what the line-out played, what Asterisk received
    write_wav(vm.log.with_name("line-out.wav"), room.heard[:played] * 32768, jack_card.RATE)
    shutil.copy(sent, vm.log.with_name("far-end-received.wav"))
    realtime = after.get("realtime") or {}
    assert realtime.get("active") is True, realtime  # SCHED_FIFO took in the service
    check_card_loop(vm, after)
    # Asterisk's tone, through the guest's snd-hda-intel line-out into the room; the room's
    # tone through its line-in and the box, as Asterisk received it
    x = room.heard[:played].astype(np.float64) * 32768
    rate = jack_card.RATE
    loud = np.abs(x) > 1000
    assert loud.any(), "the line-out stayed silent"
    first = int(np.argmax(loud))
    assert len(x) - first >= rate * 4, "the tone lasted less than 4 s"
    speaker = x[first: first + rate * 4]
    y, yrate = wav_array(sent)
    assert len(y) >= yrate * 10, f"Asterisk recorded {len(y) / yrate:.1f} s of the box"
    mic = y[yrate: yrate * 10]
    report = []
    for what, z, zrate, hz in (("line-out", speaker, rate, TONE_HZ),
                               ("line-in at the far end", mic, yrate, MIC_HZ)):
        got, snr, clean = peak_hz(z, zrate), tone_snr_db(z, hz, zrate), tone_frames(z, hz, zrate)
        report.append((what, got, snr, clean, hz))
    # the host's side of the emulated card: how regularly jackd ran the room's cycles
    cycles = np.diff(room.cycles[:room.cycle, 1]) * 1000
    line = "HDA card loop, audio: " + "; ".join(
        f"{what} {got:.0f} Hz, SNR {snr:.1f} dB, clean 20 ms frames {clean:.0%}"
        for what, got, snr, clean, _ in report) + (
        f"; jackd's {JACK_PERIOD * 1000 // rate} ms cycles: p99 {np.percentile(cycles, 99):.1f}"
        f" ms, max {cycles.max():.1f} ms")
    print(line)
    BOOT_TIMINGS.append(line)
    # Both tones are there, and clean between the gaps: under TCG the emulated card's periods
    # come late and in bursts (jitter well beyond the loop's 5 ms grace), so the loop ticks
    # silence and drops late periods, and the speaker underruns: those 20 ms frames are not
    # clean. Where no gap falls, the tone is 28-45 dB above the rest (seen here). Clean
    # frames seen: 60-93 % on a quiet host, 32 % of the line-in's with other tests on both
    # cores (loop-paced, to stop 32). Kernel-paced (stop 33 on: the image's fq) the line-in's
    # are 12-40 % in 5 boots on a quiet host, against 50 and 96 % in 2 boots of the same image
    # with media.kernel_pacing off: 282-479 silent ticks a call kernel-paced against 45, 271
    # (docs/notes/card-loop.md: not understood yet). The bound asks for the tone to come
    # through the driver, not for TCG's timing
    for _what, got, _snr, clean, hz in report:
        assert abs(got - hz) < 10, line
        assert clean >= 0.05, line


def check_card_loop(vm: Qemu, after: dict) -> None:
    """The call ran on the card loop (the media loop read and wrote the HD Audio card itself,
    paced by its periods) and the guest's driver ran the PCMs the box asked for."""
    in_call = [st for _, st in vm.reports("STATUS") if st.get("state") == "in_call"]
    assert in_call, "no status was reported in the call"
    audio, card = after["audio"], after.get("card") or {}
    # the loop drove a card (these counters exist only then) and ended the call on it: a card
    # lost in the call (card_gone; EIO in 2 boots of 6 here: card-path.md's open question) must
    # have been opened again (card_adopted)
    assert audio["card"] == "ok" and card.get("card") == "ok", (audio, card)
    assert audio["state"] == "ok" and card["card_adopted"] == card["card_gone"], (audio, card)
    # the packets' send times were the kernel's: the image puts fq on its links (sysctl.d), the
    # box found it on its way out to the PBX (rtnetlink) and handed each packet over ahead,
    # stamped with its time (SO_TXTIME) — Debian's arm64 kernel and qdisc, not this host's
    assert card.get("pacing") == "kernel" and card.get("kernel_pacing") is True, card
    assert card.get("egress", "").endswith(("(fq)", "(mq(fq))")), card
    opened = [s for _, s in vm.reports("SOUND") if len(s) > 1]  # the only card's PCMs
    assert opened, "the guest's /proc/asound showed no open PCM in the call"
    params = {k: v for k, v in opened[-1].items() if k != "cards"}
    line = ("HDA card loop (QEMU virt, TCG): xruns capture {capture_xruns} playback "
            "{playback_xruns}, card timeouts {card_timeouts}, silent ticks {silent_ticks}, late "
            "periods {late_periods}, held ticks {held_ticks}, playback trimmed "
            "{playback_trimmed} dropped {playback_dropped} (samples), card lost {card_gone} "
            "(error {card_error}), reopened {card_adopted}").format(**card)
    line += "\nguest hw_params in the call: " + "; ".join(
        f"{k}: " + ", ".join(v.splitlines()) for k, v in sorted(params.items()))
    print(line)
    BOOT_TIMINGS.append(line)


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
