"""``./build.sh run``: a local Asterisk with the shipped pbx/ config and the intercom registered
to it as 5002, with simulated GPIO (keys are the buttons, LEDs are drawn in the terminal) and
audio from this machine's ALSA default device, or from/to WAV files when there is none. Ctrl-C
(or q) stops both cleanly.

A local Mosquitto on 127.0.0.1 (plain TCP, anonymous, loopback only) receives the box's
building events and retained state: ``mosquitto_sub -h 127.0.0.1 -p PORT -t 'intercom/#' -v``
shows them (MQTT_PORT, default 1883 or a free port).

It also serves the reception console (web/) from Asterisk's HTTP server: over HTTPS/WSS on
port 8089 with a certificate from a local CA made once in ${INTERCOM_CACHE}/webrtc/, and over
plain HTTP/WS on 127.0.0.1:8088 for a browser on this machine.

Environment: PBX_BIND (default 0.0.0.0, so a softphone on the LAN can register; use 127.0.0.1
to stay on this machine), PBX_PORT (default 5060), PBX_WEB_PORT (HTTPS/WSS, default 8089),
PBX_HTTP_PORT (plain HTTP on loopback, default 8088), INTERCOM_CONFIG (use your own YAML
instead of the generated one).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path
from urllib.parse import urlencode

from .asterisk import PASSWORDS, Asterisk
from .certificate import web_certificate
from .loopback import free_port
from .mosquitto import Mosquitto
from .paths import REPO
from .waiting import wait_for


def _lan_address() -> str:
    from firmware.net import source_address_for

    return source_address_for("192.0.2.1", 9)  # TEST-NET: nothing is sent, only routed


KEYS = {"c": "call", "a": "answer", "h": "hangup", "t": "talk"}
LED_ORDER = ("registered", "ringing", "calling", "in_call", "error", "relay")


def _alsa_default_works() -> bool:
    try:
        from firmware.media.alsa import probe

        probe("default", capture=True)
        probe("default", capture=False)
        return True
    except Exception:  # noqa: BLE001 - any failure means: use WAV files
        return False


def _panel(status: dict, blink_phase: bool) -> str:
    leds = status.get("leds", {})
    parts = []
    for name in LED_ORDER:
        mode = leds.get(name, "off")
        lit = mode == "on" or (mode == "blinking" and blink_phase)
        parts.append(f"\x1b[{'1;32' if lit else '2'}m{'●' if lit else '○'} {name}\x1b[0m")
    remote = f"  {status.get('remote')}" if status.get("remote") else ""
    return f"\r\x1b[K[{status.get('state', '?'):>8}] " + "  ".join(parts) + remote


def _console(sock: Path, proc: subprocess.Popen, stopping: list[bool]) -> None:
    """Keys -> button presses; status -> LED line. Plain waiting when stdin is not a TTY."""
    from firmware.control import request

    interactive = sys.stdin.isatty()
    saved = termios.tcgetattr(sys.stdin) if interactive else None
    if interactive:
        tty.setcbreak(sys.stdin.fileno())
    phase = False
    try:
        while not stopping[0] and proc.poll() is None:
            if interactive:
                ready, _, _ = select.select([sys.stdin], [], [], 0.25)
                if ready:
                    key = sys.stdin.read(1).lower()
                    if key == "q":
                        return
                    if key in KEYS:
                        request(str(sock), "press", button=KEYS[key])
                    elif key.isdigit() or key in "*#":
                        request(str(sock), "dtmf", digits=key)
                try:
                    phase = not phase
                    sys.stdout.write(_panel(request(str(sock), "status"), phase))
                    sys.stdout.flush()
                except (OSError, ValueError, json.JSONDecodeError):
                    pass
            else:
                time.sleep(0.25)
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
            print()


def _tcp_port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _certificate_names(host: str) -> list[str]:
    name = socket.gethostname()
    names = ["localhost", "127.0.0.1", name]
    if "." not in name:
        names.append(f"{name}.local")
    if host not in names:
        names.append(host)
    return names


def main() -> int:
    bind = os.environ.get("PBX_BIND", "0.0.0.0")
    port = int(os.environ.get("PBX_PORT", "5060"))
    web_port = int(os.environ.get("PBX_WEB_PORT", "8089"))
    http_port = int(os.environ.get("PBX_HTTP_PORT", "8088"))
    if not _tcp_port_free(http_port):
        http_port = free_port(socket.SOCK_STREAM)
    state = REPO / ".cache" / "run"
    state.mkdir(parents=True, exist_ok=True)
    host = _lan_address() if bind == "0.0.0.0" else bind
    cert = web_certificate(_certificate_names(host))
    pbx = Asterisk(bind=bind, port=port, http_port=http_port, tls=cert, tls_port=web_port)
    print(f"starting Asterisk 22 on {bind}:{port} (config from pbx/) ...", flush=True)
    pbx.start()
    cfg_path = Path(os.environ.get("INTERCOM_CONFIG") or state / "intercom.yaml")
    mq_port = int(os.environ.get("MQTT_PORT", "1883"))
    if not _tcp_port_free(mq_port):
        mq_port = free_port(socket.SOCK_STREAM)
    broker = Mosquitto(state / "mosquitto", plain_port=mq_port)
    try:
        broker.start()
        mqtt = (f"mqtt:\n  host: 127.0.0.1\n  port: {mq_port}\n  tls: false\n"
                "  name: door\n")
        mqtt_note = (f"events: mosquitto_sub -h 127.0.0.1 -p {mq_port} -t 'intercom/#' -v "
                     f"(retained state, events, Home Assistant discovery: homeassistant/#)")
    except (OSError, RuntimeError) as exc:
        mqtt, mqtt_note = "", f"events: no local Mosquitto ({exc}): no MQTT"
    sock = state / "control.sock"
    if _alsa_default_works():
        audio = "audio:\n  capture: default\n  playback: default\n"
        audio_note = "audio: this machine's ALSA default microphone and speaker"
    else:
        audio = (f"audio:\n  capture: tone:440\n  playback: wav:{state / 'heard.wav'}\n")
        audio_note = (f"audio: no sound card, so the box sends a 440 Hz tone and records what "
                      f"it hears to {state / 'heard.wav'}")
    if "INTERCOM_CONFIG" not in os.environ:
        cfg_path.write_text(f"""# generated by ./build.sh run
sip:
  server: 127.0.0.1
  port: {port}
  username: "5002"
  password: {PASSWORDS["5002"]}
  display_name: Door
  local_port: {free_port()}
calls:
  default_target: "5001"
  door_code: "*1"
control:
  socket: {sock}
media:
  rtp_port: 0
gpio:
  pin_factory: mock
{audio}{mqtt}""")
    intercom = [sys.executable, "-m", "firmware", "run", "--config", str(cfg_path)]
    proc = subprocess.Popen(intercom)
    stopping = [False]

    def stop(*_: object) -> None:
        stopping[0] = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        wait_for(lambda: pbx.registered("5002") or proc.poll() is not None, 15, 0.2,
                 "the intercom to register")
        ic = f"{sys.executable} -m firmware --socket {sock}"
        kiosk = urlencode({"user": "5004", "password": PASSWORDS["5004"], "door": "5002",
                           "code": "*1"})
        print(f"""
==========================================================================
 The intercom is registered to Asterisk as 5002.
 Call it from a softphone: register it as
     user 5001   password {PASSWORDS["5001"]}   server {host}:{port} (UDP)
 (or 5003 / {PASSWORDS["5003"]}), then dial 5002.
 {audio_note}
 {mqtt_note}
 Reception console in a browser (extension 5004, password {PASSWORDS["5004"]}):
     https://{host}:{web_port}/
   trust the certificate first: install {cert.ca} as an authority (or open the
   address and accept the warning); on this machine without that: http://127.0.0.1:{http_port}/
   kiosk link (logs in by itself; it holds the password, keep it off shared screens):
     https://{host}:{web_port}/static/index.html?{kiosk}
 The call button rings the desk phone (5001) and the console (5004) together.
 Keys (simulated GPIO): c = call button (dials 5001), a = answer, h = hangup,
   t = talk, 0-9 * # = send DTMF, q = quit. The door code is *1 (relay LED).
 Or drive the box from another terminal:
     {ic} status | events | answer | hangup | open-door | call 5001 | press call
 Ctrl-C stops the intercom (it un-registers) and Asterisk.
==========================================================================
""", flush=True)
        _console(sock, proc, stopping)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        pbx.cleanup()
        broker.stop()
        print("stopped intercom, Asterisk and Mosquitto")
    return 0 if proc.returncode in (0, -signal.SIGINT) else proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
