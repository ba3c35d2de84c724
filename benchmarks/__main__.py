"""``./build.sh bench`` / ``python -m benchmarks [--quick]``: every figure with its reference."""

from __future__ import annotations

import argparse
import os
import platform
import sys

from . import (
    aec,
    bundle,
    button,
    callgrind_card,
    card_soak,
    codec,
    cpu,
    drift,
    flood,
    latency,
    latency_card,
    loop,
    speech,
    srtp,
    storm,
    update,
    webrtc,
)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.machine()}, {os.cpu_count()} cores, {model}, Linux "
            f"{platform.release()}, Python {sys.version.split()[0]}")


def main() -> None:
    p = argparse.ArgumentParser(prog="benchmarks")
    p.add_argument("--quick", action="store_true", help="short runs (10 s loops)")
    p.add_argument("--only", choices=["codec", "loop", "cpu", "card_cpu", "callgrind",
                                      "button", "flood", "srtp", "webrtc", "aec", "drift",
                                      "speech", "latency", "latency_card", "bundle",
                                      "install_load", "update", "storm", "card_soak"])
    p.add_argument("--boxes", type=int, default=100,
                   help="storm: how many box processes (default 100; --quick: 10)")
    args = p.parse_args()
    seconds = 10.0 if args.quick else 60.0
    print(f"machine: {machine()}\n")
    if args.only in (None, "codec"):
        print("## G.711 codec (per 160-sample frame and bulk, non-repeating input)\n")
        print(codec.table(codec.run(args.quick)), "\n", flush=True)
    if args.only in (None, "loop"):
        print(f"## 20 ms send loop, {seconds:.0f} s per row, measured at a loopback receiver\n")
        print(loop.table(loop.run(seconds)), "\n", flush=True)
    if args.only in (None, "button"):
        print("## Button press -> INVITE on the wire\n")
        print(button.table(button.run(10 if args.quick else 30)), "\n", flush=True)
    if args.only in (None, "cpu"):
        print(f"## CPU: the intercom and baresip, each in a G.711 call to Asterisk Echo() at the "
              f"same time, 8 kHz mono both, {seconds / 2:.0f} s of interleaved windows each\n")
        print(cpu.table(cpu.run(seconds / 2)), "\n", flush=True)
    if args.only == "card_cpu":  # the ALSA phases of the above alone
        print(f"## CPU on the card path: the intercom (ALSA through alsa-lib's jack plugin, echo "
              f"canceller off and speex) and baresip, each in a G.711 call to Asterisk Echo() "
              f"at the same time, {seconds / 2:.0f} s of interleaved windows each\n")
        print(cpu.table(cpu.run(seconds / 2, paths=("alsa",))), "\n", flush=True)
    if args.only in (None, "callgrind"):
        call_s = 5 if args.quick else 20
        print(f"## Instructions per call-second under callgrind ({call_s} s of call each): the "
              "intercom on its ALSA path against baresip 1.0.0, each in a call to Echo()\n")
        why = callgrind_card.available()
        print(callgrind_card.table(callgrind_card.run(call_s)) if why is None
              else f"not measured: {why}", "\n", flush=True)
    if args.only in (None, "speech"):
        print("## Speech quality under loss and jitter (PESQ), the intercom against baresip\n")
        print(speech.table(speech.run()), "\n", flush=True)
    if args.only in (None, "latency"):
        print("## Mouth-to-ear latency: a click through the box, Asterisk and back\n")
        print(latency.table(latency.run(5 if args.quick else 20)), "\n", flush=True)
    if args.only in (None, "latency", "latency_card"):
        print("### The same through the box's ALSA path (alsa-lib, a paced 8 kHz device), timed "
              "at the microphone, on the wire and at the speaker\n")
        why = latency_card.available()
        print(latency_card.table(latency_card.run(15 if args.quick else 60)) if why is None
              else f"not measured: {why}", "\n", flush=True)
    if args.only in (None, "flood"):
        print(f"## A stranger's SIP flood during a call ({seconds / 4:.0f} s windows), the "
              "cost of one message, a trusted source's worst flood (box RSS, PBX calls "
              "answered) and a stranger's 47 KB request under the 403 policy\n")
        print(flood.table(flood.run(seconds / 4)), "\n", flush=True)
    if args.only in (None, "srtp"):
        print(f"## SRTP against plain RTP, {seconds / 2:.0f} s windows\n")
        print(srtp.table(srtp.run(seconds / 2, args.quick)), "\n", flush=True)
    if args.only in (None, "drift"):
        hours = 0.25 if args.quick else 1.0
        print(f"## Sound card {hours:g} h of call +-200 ppm off the loop (simulated, virtual "
              "clock), 1013 Hz tone through both FIFOs\n")
        print(drift.table(drift.run(hours * 3600)), "\n", flush=True)
    if args.only in (None, "webrtc"):
        print("## Browser console (WebRTC via Asterisk): ringing and Open door\n")
        print(webrtc.table(webrtc.run(5 if args.quick else 20)), "\n", flush=True)
    if args.only in (None, "aec"):
        print("## Echo cancellers: the simulated room (devtools/room.py, fixed seed) and CPU, "
              f"call windows {seconds / 4:.0f} s interleaved\n")
        print(aec.table(aec.run(seconds / 4, args.quick)), "\n", flush=True)
    if args.only in (None, "bundle"):
        print("## Update bundle of the image's root: size and build time per compression\n")
        why = bundle.available()
        print(bundle.table(bundle.run(args.quick)) if why is None else f"not measured: {why}",
              "\n", flush=True)
    if args.only in (None, "install_load"):
        print(f"## The 20 ms loop during an update's install, {seconds:.0f} s per row\n")
        why = update.load_available()
        print(update.install_load_table(update.run_install_load(seconds)) if why is None
              else f"not measured: {why}", "\n", flush=True)
    if args.only in (None, "update"):
        print("## An update in QEMU: download + install, and the reboot to registered against "
              "a cold boot (about 10 min)\n")
        why = update.update_available()
        print(update.update_table(update.run_update()) if why is None
              else f"not measured: {why}", "\n", flush=True)
    if args.only == "card_soak":  # ten minutes (--quick: one): only when asked for
        minutes, ref = (1.0, 0.5) if args.quick else (10.0, 2.0)
        print(f"## Card soak: {minutes:g} min on the jack-plugin card, 2 busy cores, real-time "
              "priority, one call to Asterisk Echo(); reference: the tone/null path, "
              f"{ref:g} min\n")
        print(card_soak.table(card_soak.run(minutes, ref)), "\n", flush=True)
    if args.only == "storm":  # minutes of 2N processes: only when asked for
        n = 10 if args.quick and args.boxes == 100 else args.boxes
        print(f"## Registration storm: {n} boxes against one Asterisk, cold start, an "
              "Asterisk restart, idle cost and concurrent calls\n")
        print(storm.table(storm.run(n, 10.0 if args.quick else 30.0, min(16, n // 2))), "\n",
              flush=True)


if __name__ == "__main__":
    main()
