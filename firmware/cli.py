"""Command line: ``intercom run|check-config|status|events|call|answer|hangup|open-door|dtmf|
press``.

Owns argument parsing, logging set-up, signal handling and exit codes (2 = bad configuration,
1 = the running intercom could not be reached or refused). The composition root: config ->
app. Knows nothing about SIP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

from .config import (
    DEFAULT_PATH,
    ConfigError,
    ControlSettings,
    UpdateSettings,
    load_boot,
    load_config,
)


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    path = args.config or os.environ.get("INTERCOM_CONFIG") or DEFAULT_PATH
    try:  # a boot YAML may leave sip.* to the provisioning server
        boot = load_boot(path)
    except ConfigError:
        return ControlSettings().socket
    if boot.config is not None:
        return boot.config.control.socket
    return str((boot.base.get("control") or {}).get("socket") or ControlSettings().socket)


def _cmd_run(args: argparse.Namespace) -> int:
    try:  # the boot YAML; with provisioning.url it is the floor under the provisioned one
        boot = load_boot(args.config or os.environ.get("INTERCOM_CONFIG") or DEFAULT_PATH)
    except ConfigError as exc:
        print(f"intercom: {exc}", file=sys.stderr)
        return 2
    cfg = boot.config
    configured = cfg.log.level if cfg else (boot.base.get("log") or {}).get("level", "info")
    level = getattr(logging, (args.log_level or configured).upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .runner import run
    from .startup import StartupError

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(boot, stop)

    try:
        asyncio.run(main())
    except StartupError as exc:
        print(f"intercom: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _update_settings(args: argparse.Namespace) -> UpdateSettings:
    """The boot YAML's ``update`` section (ConfigError when the file is not valid)."""
    return load_boot(args.config or os.environ.get("INTERCOM_CONFIG") or DEFAULT_PATH).update


def _cmd_update(args: argparse.Namespace) -> int:
    """``intercom update FILE|URL``: check, wait until idle, install, reboot when idle."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if not args.source and not args.ack:
        print("intercom: update needs a bundle FILE or an https:// URL", file=sys.stderr)
        return 2
    try:
        settings = _update_settings(args)
    except ConfigError as exc:
        print(f"intercom: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("intercom: update must run as root (it writes a root slot)", file=sys.stderr)
        return 1
    if args.ack:
        from .update.health_runner import acknowledge

        return acknowledge(settings.state_dir)
    from .update.installer import Updater

    updater = Updater(settings, _socket_path(args))
    return updater.update(args.source, force=args.force, reboot=not args.no_reboot,
                          ca_file=args.ca_file)


def _cmd_updater(args: argparse.Namespace) -> int:
    """``intercom updater`` (intercom-updater.service, root): pull ``update.url`` every
    ``update.interval`` and reboot into what was installed at the right moment. The boot YAML
    is read again every round (at once on SIGHUP); while it is not valid, only a pending reboot
    is handled."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .update.installer import Updater

    stop, wake = threading.Event(), threading.Event()

    def end(*_: object) -> None:
        stop.set()
        wake.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, end)
    signal.signal(signal.SIGHUP, lambda *_: wake.set())  # systemctl reload: read the card now
    last_problem: list[str] = []

    def settings() -> UpdateSettings:
        try:
            found = _update_settings(args)
        except ConfigError as exc:
            if last_problem != [str(exc)]:
                logging.getLogger("intercom.update").error("%s: pulling paused", exc)
                last_problem[:] = [str(exc)]
            return UpdateSettings()
        last_problem.clear()
        return found

    Updater(settings(), _socket_path(args), stop=stop, wake=wake).run(settings)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(f"intercom: {exc}", file=sys.stderr)
        return 2
    from .core._aec import unavailable  # what this build has, which the file cannot know

    if (why := unavailable(cfg.audio.echo_canceller)) is not None:
        print(f"intercom: {args.file}: audio.echo_canceller: {cfg.audio.echo_canceller}: {why}",
              file=sys.stderr)
        return 2
    print(f"{args.file}: OK ({cfg.sip.username}@{cfg.sip.server}:{cfg.sip.port} "
          f"over {cfg.sip.transport.upper()})")
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    from .config import UpdateSettings
    from .update.health import Limits
    from .update.health_runner import command

    update = UpdateSettings()
    try:  # without a readable YAML the ordinary boot's rule still runs, with the defaults
        update = load_boot(args.config or os.environ.get("INTERCOM_CONFIG") or DEFAULT_PATH).update
    except ConfigError as exc:
        print(f"intercom health: {exc} (using the update defaults)", file=sys.stderr)
    limits = Limits(register_timeout=args.register_timeout or update.trial_register_timeout,
                    pbx_silence=args.pbx_silence or update.trial_pbx_silence,
                    settle=args.settle or Limits.settle)
    return command(args.state_dir or update.state_dir, _socket_path(args), limits, args.poll,
                   args.cmdline)


def _client(args: argparse.Namespace, cmd: str, **extra: Any) -> int:
    from .control import request

    path = _socket_path(args)
    try:
        reply = request(path, cmd, **extra)
    except (OSError, ValueError) as exc:
        print(f"intercom: cannot reach the intercom at {path}: {exc}", file=sys.stderr)
        return 1
    if cmd == "status" and not args.json and reply.get("ok"):
        _print_status(reply)
    elif cmd == "events" and not args.json and reply.get("ok"):
        from .outbound.visitor_log import line
        for event in reply.get("events") or []:
            print(line(event))
    else:
        print(json.dumps(reply, indent=None if cmd != "status" else 2))
    return 0 if reply.get("ok") else 1


def _print_status(st: dict[str, Any]) -> None:
    reg = "registered" if st["registered"] else "NOT registered"
    print(f"{st['username']}@{st['server']} ({st['transport']}): {reg}")
    print(f"state: {st['state']}")
    srv = st.get("registrar") or {}
    if len(srv.get("targets") or []) > 1 or srv.get("moved"):
        name = f" ({srv['name']})" if srv.get("name") else ""
        rank = "preferred" if srv.get("preferred") else "BACKUP"
        print(f"server: {srv['address']}{name}, {rank} of {len(srv['targets'])}"
              + (f"; last moved: {srv['moved']}" if srv.get("moved") else ""))
    for why in srv.get("skipped") or []:
        print(f"server skipped: {why}")
    if st.get("remote"):
        dur = f", {st['call_duration']} s" if st.get("call_duration") is not None else ""
        print(f"remote: {st['remote']}{dur}")
    gpio = st.get("gpio") or {}
    if gpio:
        kind = "SIMULATED (this machine has no GPIO)" if gpio.get("simulated") else gpio["factory"]
        print(f"gpio: {kind}")
        for error in gpio.get("errors") or []:
            print(f"gpio error: {error}")
    rt = st.get("realtime") or {}
    if rt.get("priority"):
        took = {True: "SCHED_FIFO active", False: "SCHED_FIFO REFUSED (normal scheduling)",
                None: "not known until the first call"}[rt.get("active")]
        print(f"media loop: realtime priority {rt['priority']}: {took}")
    rtp = st.get("rtp") or {}
    devices = _audio_devices(st.get("audio") or {})
    if st.get("remote") and rtp:
        print(f"audio: {devices + '; ' if devices else ''}"
              f"{rtp.get('lost', 0)} lost, {rtp.get('concealed_ms', 0)} ms concealed "
              f"({rtp.get('bridged_ms', 0)} ms bridged), "
              f"jitter buffer {rtp.get('buffer_depth_ms', 0)} ms, "
              f"sound card drift {rtp.get('drift_ppm', 0.0):+.1f} ppm")
        if "send_lag_p99_us" in rtp:
            lead = rtp.get("lead_us", 0.0)
            print(f"media loop timing: packets at the socket {rtp['send_lag_p99_us']:.0f} µs "
                  f"after their deadline (p99; max {rtp.get('send_lag_max_us', 0.0):.0f}, "
                  f"{rtp.get('late_sends', 0)} over 1 ms), work per tick "
                  f"{rtp.get('work_p99_us', 0.0):.0f} µs (p99), "
                  + (f"done {lead:.0f} µs ahead" if lead else "done at the deadline")
                  + (f"; sent at their times by the {rtp['pacing']}" if rtp.get("pacing")
                     else "")
                  + (f" (way out: {rtp['egress']})" if rtp.get("egress") else "")
                  + (f"; the card's periods {rtp['card_jitter_p99_us']:.0f} µs off its clock "
                     "(p99)" if "card_jitter_p99_us" in rtp else ""))
    elif devices:
        print(f"audio: {devices}")
    aec = (st.get("audio") or {}).get("aec") or {}
    if aec:
        print(f"echo canceller: {aec['kind']}, reference delay {aec['delay_ms']:.0f} ms "
              f"({aec['card_ms']:.0f} ms in the sound card), {aec['errors']} errors")
    if st.get("last_error"):
        print(f"last error: {st['last_error']}")
    mqtt = (st.get("events") or {}).get("mqtt")
    if mqtt:
        link = "connected" if mqtt["connected"] else f"NOT connected ({mqtt['error']})"
        print(f"mqtt: {mqtt['broker']} {link}, {mqtt['sent']} sent, {mqtt['dropped']} dropped")
    for hook in (st.get("events") or {}).get("webhooks") or []:
        print(f"webhook: {hook['url']}: {hook['delivered']} delivered, {hook['failed']} failed, "
              f"{hook['dropped']} dropped" + (f" ({hook['error']})" if hook["error"] else ""))
    prov = st.get("provisioning") or {}
    _print_update(st.get("update") or {})
    if prov.get("url"):
        applied = prov.get("applied") or "none (the boot YAML)"
        print(f"provisioning: {prov['url']} ({prov.get('source')}), applied {applied}, "
              f"last fetch: {prov.get('last_result') or 'not yet'}"
              + (f" - {prov['last_error']}" if prov.get("last_error") else ""))


def _audio_devices(audio: dict[str, Any]) -> str:
    """Both sides as configured, with the ALSA device opened where it differs (``usb``:
    the card it resolved to); empty while no side has opened a device."""
    sides = [(side, audio.get(side), audio.get(f"{side}_device"))
             for side in ("capture", "playback")]
    if not any(device for _, _, device in sides):
        return ""
    return ", ".join(f"{side} {name}" + (f" ({device})" if device and device != name else "")
                     for side, name, device in sides)


def _print_update(up: dict[str, Any]) -> None:
    if up.get("booted_slot"):
        slots = up.get("slots") or {}
        print(f"slots: A {slots.get('A', 'unknown')}, B {slots.get('B', 'unknown')}; "
              f"booted {up['booted_slot']}")
    last = up.get("last") or {}
    if last.get("result") not in (None, "none"):
        print(f"last update: {last['result']}"
              + (f" ({last['reason']})" if last.get("reason") else "")
              + (f": {last['message']}" if last.get("message") else ""))
    pending = up.get("pending_reboot")
    if pending:
        print(f"update: reboot into slot {pending['slot']} ({pending['version']}) pending")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intercom", description="SIP door intercom")
    p.add_argument("--config", "-c", help=f"configuration file (default {DEFAULT_PATH})")
    p.add_argument("--socket", help="control socket path (default: from the configuration)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the intercom")
    run.add_argument("--config", "-c", dest="config", default=argparse.SUPPRESS)
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    upd = sub.add_parser("update", help="install a signed bundle (FILE or https:// URL) into "
                         "the other slot when idle, then reboot into it (root)")
    upd.add_argument("--config", "-c", dest="config", default=argparse.SUPPRESS)
    upd.add_argument("--socket", dest="socket", default=argparse.SUPPRESS)
    upd.add_argument("source", nargs="?", help="a .raucb file or an https:// URL")
    upd.add_argument("--force", action="store_true",
                     help="install even an older, the same or a refused version")
    upd.add_argument("--no-reboot", action="store_true",
                     help="install only; the new slot starts at the next reboot")
    upd.add_argument("--ca-file", help="the CA of the URL's server (default: update.ca_file)")
    upd.add_argument("--ack", action="store_true", help="a rollback was seen: stop the error "
                     "LED's slow blink (status keeps the record)")
    updater = sub.add_parser("updater", help="pull update.url every update.interval "
                             "(intercom-updater.service, root)")
    updater.add_argument("--config", "-c", dest="config", default=argparse.SUPPRESS)
    updater.add_argument("--socket", dest="socket", default=argparse.SUPPRESS)
    health = sub.add_parser("health", help="after a boot: mark the booted slot good, give a "
                            "new one up, notice a rollback (root; intercom-health.service)")
    health.add_argument("--config", "-c", dest="config", default=argparse.SUPPRESS)
    health.add_argument("--socket", dest="socket", default=argparse.SUPPRESS)
    health.add_argument("--state-dir", help="default: update.state_dir")
    health.add_argument("--cmdline", default="/proc/cmdline", help=argparse.SUPPRESS)
    health.add_argument("--poll", type=float, default=5.0, help="seconds between two looks")
    for flag, key in (("--register-timeout", "update.trial_register_timeout"),
                      ("--pbx-silence", "update.trial_pbx_silence"),
                      ("--settle", "60 s active before an ordinary boot is good")):
        health.add_argument(flag, type=float, help=f"override {key} (a bench test)")
    helps = {"events": "the visitor log: the last building events with their times",
             "open-door": "pulse the door relay (refused during a door-code lockout)"}
    for name in ("status", "events", "call", "answer", "hangup", "open-door", "dtmf", "press"):
        sp = sub.add_parser(name, help=helps.get(name, f"{name} (through the control socket)"))
        sp.add_argument("--config", "-c", dest="config", default=argparse.SUPPRESS)
        sp.add_argument("--socket", dest="socket", default=argparse.SUPPRESS)
        if name in ("status", "events"):
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "events":
            sp.add_argument("-n", type=int, dest="count", help="only the last N")
        if name == "call":
            sp.add_argument("target", nargs="?", help="extension or SIP URI "
                            "(default: calls.default_target)")
        if name == "dtmf":
            sp.add_argument("digits", help="digits to send as RFC 4733 events, e.g. *1")
        if name == "press":
            sp.add_argument("button", help="a configured button name (call, answer, talk...)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "check-config":
        return _cmd_check(args)
    if args.command == "health":
        return _cmd_health(args)
    if args.command == "update":
        return _cmd_update(args)
    if args.command == "updater":
        return _cmd_updater(args)
    extra: dict[str, Any] = {}
    if args.command == "call" and args.target:
        extra["target"] = args.target
    if args.command == "dtmf":
        extra["digits"] = args.digits
    if args.command == "press":
        extra["button"] = args.button
    if args.command == "events" and args.count is not None:
        extra["count"] = args.count
    return _client(args, args.command.replace("-", "_"), **extra)


if __name__ == "__main__":
    sys.exit(main())
