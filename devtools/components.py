"""Real peers for integration tests and ``./build.sh run``: Asterisk 22 (from its Debian-unstable
chroot) and baresip, each started on loopback with its own ports and folders.

Nothing here stands in for the intercom: these are the peers it must work with.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ASTERISK_ROOT = Path(os.environ.get("INTERCOM_ASTERISK_ROOT", "/var/cache/intercom/asterisk-root"))
PASSWORDS = {"5001": "reception-5001-change-me", "5002": "door-5002-change-me",
             "5003": "test-5003-change-me"}


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Asterisk:
    """Asterisk 22 from the chroot, configured from pbx/ with loopback-only ports."""

    def __init__(self, direct_media: bool = False, rtp_base: int = 31000,
                 bind: str = "127.0.0.1", port: int | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: (certificate, key) PEM files for the TLS transport on ``tls_port``;
        without it the TLS transport is left out."""
        if not (ASTERISK_ROOT / "usr/sbin/asterisk").exists():
            raise RuntimeError(f"no Asterisk root at {ASTERISK_ROOT}: run ./build.sh test "
                               "(it builds it with mmdebstrap)")
        self.bind = bind
        self.port = port or free_port()
        self.name = f"t-{uuid.uuid4().hex[:8]}"
        self.inner = Path("/intercom-tests") / self.name
        self.dir = ASTERISK_ROOT / str(self.inner).lstrip("/")
        self.direct_media = direct_media
        self.rtp_base = rtp_base
        self.tls = tls
        self.tls_port = free_port(socket.SOCK_STREAM) if tls else None
        self.proc: subprocess.Popen | None = None
        self._write_config()

    @property
    def conf(self) -> str:
        return str(self.inner / "etc/asterisk.conf")

    def _write_config(self) -> None:
        etc = self.dir / "etc"
        for sub in ("etc", "lib", "spool", "run", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for f in (REPO / "pbx").glob("*.conf"):
            text = f.read_text()
            if f.name == "pjsip.conf":
                text = text.replace("bind=0.0.0.0:5060", f"bind={self.bind}:{self.port}")
                if self.tls is None:
                    text = re.sub(r"\n\[transport-tls\]\n(?:[^\n\[]+\n)+", "\n", text)
                else:
                    keys = self.dir / "keys"
                    keys.mkdir(parents=True, exist_ok=True)
                    shutil.copy(self.tls[0], keys / "pbx.crt")
                    shutil.copy(self.tls[1], keys / "pbx.key")
                    inner_keys = self.inner / "keys"
                    text = text.replace("bind=0.0.0.0:5061", f"bind={self.bind}:{self.tls_port}")
                    text = text.replace("/etc/asterisk/keys/", f"{inner_keys}/")
                text = text.replace(
                    "direct_media=no ", f"direct_media={'yes' if self.direct_media else 'no'} ")
                if self.bind == "127.0.0.1":  # keep media on loopback too
                    text = text.replace(
                        "rewrite_contact=yes\n", "rewrite_contact=yes\nmedia_address=127.0.0.1"
                        "\nbind_rtp_to_media_address=yes\n", 1)
            if f.name == "rtp.conf":
                text = re.sub(r"rtpstart=\d+", f"rtpstart={self.rtp_base}", text)
                text = re.sub(r"rtpend=\d+", f"rtpend={self.rtp_base + 998}", text)
            (etc / f.name).write_text(text)
        inner = self.inner
        (etc / "asterisk.conf").write_text(f"""[directories]
astetcdir => {inner}/etc
astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules
astvarlibdir => {inner}/lib
astdbdir => {inner}/lib
astkeydir => {inner}/lib
astdatadir => /usr/share/asterisk
astagidir => /usr/share/asterisk/agi-bin
astspooldir => {inner}/spool
astrundir => {inner}/run
astlogdir => {inner}/log
astsbindir => /usr/sbin
[options]
verbose = 3
""")
        moddir = ASTERISK_ROOT / "usr/lib" / "x86_64-linux-gnu" / "asterisk/modules"
        if not moddir.exists():  # other architectures
            found = next(ASTERISK_ROOT.glob("usr/lib/*/asterisk/modules"))
            text = (etc / "asterisk.conf").read_text().replace(
                "/usr/lib/x86_64-linux-gnu/asterisk/modules", "/" + str(found.relative_to(
                    ASTERISK_ROOT)))
            (etc / "asterisk.conf").write_text(text)

    def start(self) -> Asterisk:
        log = open(self.dir / "log" / "console.log", "ab")
        self.proc = subprocess.Popen(
            ["chroot", str(ASTERISK_ROOT), "asterisk", "-C", self.conf, "-f", "-n", "-q"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: "fully booted" in self.rx("core waitfullybooted", check=False).lower()
                 or self._ready(), 30, 0.2, "Asterisk to boot")
        return self

    def _ready(self) -> bool:
        return "Transport" in self.rx("pjsip show transports", check=False)

    def rx(self, command: str, check: bool = True) -> str:
        r = subprocess.run(["chroot", str(ASTERISK_ROOT), "asterisk", "-C", self.conf, "-rx",
                            command], capture_output=True, text=True, timeout=20)
        if check and r.returncode != 0:
            raise RuntimeError(f"asterisk -rx {command!r} failed: {r.stderr or r.stdout}")
        return r.stdout

    def contacts(self) -> str:
        return self.rx("pjsip show contacts")

    def registered(self, ext: str) -> bool:
        return bool(re.search(rf"Contact:\s+{ext}/sip:\S+\s+\S+\s+(Avail|NonQual|Unknown)",
                              self.contacts()))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.rx("core stop now", check=False)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        p = self.dir / "log" / "console.log"
        return p.read_text(errors="replace") if p.exists() else ""


class Baresip:
    """A real baresip softphone registered to Asterisk, driven through its ctrl_tcp module.

    Audio: ausine as source; no player unless ``record_dir`` is given (sndfile then records the
    decoded call audio as WAV files there).
    """

    def __init__(self, asterisk: Asterisk, ext: str = "5001", answer: str = "manual",
                 tone_hz: int = 440, record_dir: Path | None = None, tmp: Path | None = None,
                 paced: bool | None = None):
        self.ext = ext
        self.asterisk = asterisk
        self.dir = Path(tmp or f"/tmp/baresip-{uuid.uuid4().hex[:8]}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        self.rtp_ports = (41000 + (self.sip_port % 50) * 100, 41000 + (self.sip_port % 50) * 100
                          + 98)
        modules = ["g711.so", "ausine.so", "account.so", "ctrl_tcp.so", "menu.so"]
        extra = ""
        player = "audio_player nothing,none\n"
        # a recording call needs a paced player: jackd's dummy driver (ALSA null is unpaced)
        self.paced = record_dir is not None if paced is None else paced
        self.jack_name = f"ic-{uuid.uuid4().hex[:8]}" if self.paced else None
        self.jackd: subprocess.Popen | None = None
        if record_dir is not None:
            modules.append("sndfile.so")
            extra = f"snd_path {record_dir}\n"
        if self.paced:
            modules.append("jack.so")
            player = ("audio_player jack,\nauplay_srate 48000\nauplay_channels 2\n"
                      "auplay_format float\njack_connect_ports no\n")
        (self.dir / "config").write_text(
            "poll_method epoll\n"
            f"sip_listen 127.0.0.1:{self.sip_port}\n"
            "net_interface 127.0.0.1\n"
            f"audio_source ausine,{tone_hz}\n"
            + player + "audio_alert nothing,none\n"
            "ausrc_srate 48000\nausrc_channels 2\n"
            "sip_transports udp\n"
            f"rtp_ports {self.rtp_ports[0]}-{self.rtp_ports[1]}\n"
            "module_path /usr/lib/baresip/modules\n"
            + "".join(f"module {m}\n" for m in modules)
            + f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}\n" + extra)
        (self.dir / "accounts").write_text(
            f"<sip:{ext}@127.0.0.1:{asterisk.port};transport=udp>;auth_pass={PASSWORDS[ext]};"
            f"regint=60;answermode={answer}\n")
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self._buf = b""
        self.events: list[dict] = []

    def start(self) -> Baresip:
        self.log = open(self.dir / "baresip.log", "wb")
        env = dict(os.environ)
        if self.jack_name:
            env["JACK_DEFAULT_SERVER"] = self.jack_name
            env["JACK_NO_AUDIO_RESERVATION"] = "1"
            self.jackd = subprocess.Popen(
                ["jackd", "--no-realtime", "-n", self.jack_name, "-d", "dummy", "-r", "48000",
                 "-p", "960"], stdin=subprocess.DEVNULL, stdout=self.log,
                stderr=subprocess.STDOUT, env=env)
            time.sleep(0.5)
        self.proc = subprocess.Popen(["baresip", "-f", str(self.dir)], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        def connect():
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
            except OSError:
                return None
        self.sock = wait_for(connect, 10, 0.1, "baresip ctrl_tcp")
        self.sock.settimeout(0.2)
        wait_for(lambda: self.asterisk.registered(self.ext), 10, 0.1,
                 f"baresip {self.ext} to register")
        return self

    def command(self, command: str, params: str = "") -> None:
        import json
        payload = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        assert self.sock is not None
        self.sock.sendall(f"{len(payload)}:".encode() + payload + b",")

    def _read(self) -> None:
        import json
        assert self.sock is not None
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return
        self._buf += chunk
        while True:
            colon = self._buf.find(b":")
            if colon < 0 or not self._buf[:colon].isdigit():
                return
            n = int(self._buf[:colon])
            if len(self._buf) < colon + 1 + n + 1:
                return
            obj = json.loads(self._buf[colon + 1: colon + 1 + n])
            self._buf = self._buf[colon + 2 + n:]
            self.events.append(obj)

    def wait_event(self, kind: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for ev in self.events[seen:]:
                if ev.get("event") and ev.get("type") == kind:
                    self.events.remove(ev)
                    return ev
            seen = 0
            self._read()
        raise AssertionError(f"baresip {self.ext}: no {kind} event within {timeout} s; "
                             f"saw {[e.get('type') for e in self.events if e.get('event')]}")

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.jackd is not None and self.jackd.poll() is None:
            self.jackd.terminate()
            try:
                self.jackd.wait(5)
            except subprocess.TimeoutExpired:
                self.jackd.kill()


class Intercom:
    """``python -m firmware run`` as a real process, driven through its control socket."""

    def __init__(self, tmp: Path, server_port: int, **sip: Any) -> None:
        self.dir = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.sock = tmp / "control.sock"
        self.log_path = tmp / "intercom.log"
        self.config = tmp / "intercom.yaml"
        self.sip_port = sip.pop("local_port", None) or free_port()
        calls = sip.pop("calls", {})
        audio = sip.pop("audio", {})
        gpio = sip.pop("gpio", {"pin_factory": "mock"})
        self.env = sip.pop("env", {})
        settings = {"server": "127.0.0.1", "port": server_port, "username": "5002",
                    "password": PASSWORDS["5002"], "display_name": "Door",
                    "local_port": self.sip_port, "register_expires": 60,
                    "retry_min": 1, "retry_max": 4, **sip}
        doc = {"sip": settings, "calls": calls, "control": {"socket": str(self.sock)},
               "media": {"rtp_port": 0}, "audio": audio, "gpio": gpio,
               "log": {"level": "debug"}}
        self.config.write_text(json.dumps(doc))  # JSON is YAML
        self.proc: subprocess.Popen | None = None

    def start(self) -> Intercom:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware", "run", "--config", str(self.config)],
            cwd=REPO, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        wait_for(lambda: self.sock.exists() or self.proc.poll() is not None, 10, 0.05,
                 "the control socket")
        assert self.proc.poll() is None, self.log()
        return self

    def cmd(self, *args: str) -> dict:
        r = subprocess.run([sys.executable, "-m", "firmware", "--socket", str(self.sock), *args],
                           capture_output=True, text=True, cwd=REPO, timeout=20)
        out = r.stdout.strip()
        return json.loads(out) if out.startswith("{") else {"ok": False, "error": r.stderr}

    def status(self) -> dict:
        return self.cmd("status", "--json")

    def wait_state(self, state: str, timeout: float = 15) -> dict:
        return wait_for(lambda: (s := self.status()).get("state") == state and s, timeout, 0.1,
                        f"intercom state {state}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None
