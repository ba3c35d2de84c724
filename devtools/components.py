"""Real peers for integration tests and ``./build.sh run``: Asterisk 22 (from its Debian-unstable
chroot, optionally with its HTTP server for the browser console), baresip and the reception
console in Chromium, each started on loopback with its own ports and folders.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ASTERISK_ROOT = Path(os.environ.get("INTERCOM_ASTERISK_ROOT", "/var/cache/intercom/asterisk-root"))
PASSWORDS = {"5001": "reception-5001-change-me", "5002": "door-5002-change-me",
             "5003": "test-5003-change-me", "5004": "console-5004-change-me"}
CACHE = Path(os.environ.get("INTERCOM_CACHE", "/var/cache/intercom"))
WEB = REPO / "web"


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


def host_ipv4_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (``ip -j addr``)."""
    r = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True)
    if r.returncode != 0:
        return []
    return [a["local"] for link in json.loads(r.stdout) for a in link.get("addr_info", [])
            if not a.get("local", "127.").startswith("127.")]


def _loopback_ice_candidates() -> str:
    """rtp.conf lines that make Asterisk advertise its (loopback-bound) RTP socket as
    127.0.0.1 in ICE: it lists every interface's address as a host candidate otherwise, which
    would hand the browser addresses other than loopback."""
    lines = "".join(f"{addr} => 127.0.0.1\n" for addr in host_ipv4_addresses())
    return f"\n[ice_host_candidates]\n{lines}" if lines else ""


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
                 bind: str = "127.0.0.1", port: int | None = None, netns: str | None = None,
                 media_address: str | None = None, media_encryption: str | None = None,
                 http_port: int | None = None, tls: WebCertificate | None = None,
                 tls_port: int = 8089, sip_tls: tuple[Path, Path] | None = None) -> None:
        """``netns``: run inside that network namespace (the QEMU image tests: nothing Asterisk
        sends can leave the namespace). ``media_address``: the address Asterisk announces in
        SDP while its RTP stays bound to every address of its namespace (a QEMU guest reaches
        the host's loopback as 10.0.2.2). ``media_encryption``: e.g. "sdes": every endpoint
        demands SRTP. ``http_port``: enable Asterisk's HTTP server on 127.0.0.1 (SIP over
        ``ws://`` at ``/ws`` and the console from web/ at ``/static/``); ``tls``: also HTTPS/WSS
        on ``bind:tls_port`` with that certificate. Without ``http_port`` the HTTP server is
        off. ``sip_tls``: (certificate, key) PEM files for the SIP TLS transport on
        ``sip_tls_port``; without it the TLS transport is left out."""
        if not (ASTERISK_ROOT / "usr/sbin/asterisk").exists():
            raise RuntimeError(f"no Asterisk root at {ASTERISK_ROOT}: run ./build.sh test "
                               "(it builds it with mmdebstrap)")
        self.bind = bind
        self.port = port or free_port()
        self.http_port = http_port
        self.tls = tls
        self.tls_port = tls_port
        self.name = f"t-{uuid.uuid4().hex[:8]}"
        self.inner = Path("/intercom-tests") / self.name
        self.dir = ASTERISK_ROOT / str(self.inner).lstrip("/")
        self.direct_media = direct_media
        self.media_encryption = media_encryption  # e.g. "sdes": every endpoint demands SRTP
        self.rtp_base = rtp_base
        self.netns = netns
        self.media_address = media_address
        self.sip_tls = sip_tls
        self.sip_tls_port = free_port(socket.SOCK_STREAM) if sip_tls else None
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
                if self.sip_tls is None:
                    text = re.sub(r"\n\[transport-tls\]\n(?:[^\n\[]+\n)+", "\n", text)
                else:
                    keys = self.dir / "keys"
                    keys.mkdir(parents=True, exist_ok=True)
                    shutil.copy(self.sip_tls[0], keys / "pbx.crt")
                    shutil.copy(self.sip_tls[1], keys / "pbx.key")
                    inner_keys = self.inner / "keys"
                    text = text.replace("bind=0.0.0.0:5061",
                                        f"bind={self.bind}:{self.sip_tls_port}")
                    text = text.replace("/etc/asterisk/keys/", f"{inner_keys}/")
                text = text.replace(
                    "direct_media=no ", f"direct_media={'yes' if self.direct_media else 'no'} ")
                if self.media_address:
                    text = text.replace("rewrite_contact=yes\n", "rewrite_contact=yes\n"
                                        f"media_address={self.media_address}\n", 1)
                elif self.bind == "127.0.0.1":  # keep media on loopback too
                    text = text.replace(
                        "rewrite_contact=yes\n", "rewrite_contact=yes\nmedia_address=127.0.0.1"
                        "\nbind_rtp_to_media_address=yes\n", 1)
                if self.media_encryption:  # into the endpoint template: all extensions
                    text = text.replace("rewrite_contact=yes\n", "rewrite_contact=yes\n"
                                        f"media_encryption={self.media_encryption}\n", 1)
            if f.name == "rtp.conf":
                text = re.sub(r"rtpstart=\d+", f"rtpstart={self.rtp_base}", text)
                text = re.sub(r"rtpend=\d+", f"rtpend={self.rtp_base + 998}", text)
                if self.bind == "127.0.0.1":
                    text += _loopback_ice_candidates()
            if f.name == "http.conf":
                text = self._http_conf(text)
            (etc / f.name).write_text(text)
        inner = self.inner
        datadir = "/usr/share/asterisk"
        if self.http_port is not None:
            datadir = str(inner / "data")
            self._static_files()
        (etc / "asterisk.conf").write_text(f"""[directories]
astetcdir => {inner}/etc
astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules
astvarlibdir => {inner}/lib
astdbdir => {inner}/lib
astkeydir => {inner}/lib
astdatadir => {datadir}
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

    def _http_conf(self, text: str) -> str:
        """pbx/http.conf with this instance's ports: plain HTTP (ws://) on 127.0.0.1 only, HTTPS
        (wss://) on ``bind:tls_port`` when a certificate is given; disabled without a port."""
        if self.http_port is None:
            return re.sub(r"(?m)^enabled=yes", "enabled=no", text)
        text = re.sub(r"(?m)^bindaddr=.*", "bindaddr=127.0.0.1", text)
        text = re.sub(r"(?m)^bindport=.*", f"bindport={self.http_port}", text)
        if self.tls is None:
            return re.sub(r"(?m)^tlsenable=yes", "tlsenable=no", text)
        keys = self.dir / "keys"
        keys.mkdir(exist_ok=True)
        shutil.copyfile(self.tls.cert, keys / "web.crt")
        shutil.copyfile(self.tls.key, keys / "web.key")
        os.chmod(keys / "web.key", 0o600)
        text = re.sub(r"(?m)^tlsbindaddr=.*", f"tlsbindaddr={self.bind}:{self.tls_port}", text)
        text = re.sub(r"(?m)^tlscertfile=.*", f"tlscertfile={self.inner}/keys/web.crt", text)
        return re.sub(r"(?m)^tlsprivatekey=.*", f"tlsprivatekey={self.inner}/keys/web.key", text)

    def _static_files(self) -> None:
        """A data folder whose static-http is a copy of web/ (Asterisk serves files only from
        <astdatadir>/static-http); everything else links to the chroot's /usr/share/asterisk."""
        if not (WEB / "node_modules" / "sip.js" / "lib" / "index.js").exists():
            raise RuntimeError("web/node_modules is missing: run `npm ci` in web/ "
                               "(./build.sh setup does)")
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        for entry in (ASTERISK_ROOT / "usr/share/asterisk").iterdir():
            if entry.name != "static-http" and not (data / entry.name).exists():
                (data / entry.name).symlink_to(Path("/usr/share/asterisk") / entry.name)
        shutil.copytree(WEB, data / "static-http", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.md", "package*.json", "*.d.ts",
                                                      "*.map"))

    @property
    def ws_url(self) -> str:
        """SIP over plain WebSocket on loopback (tests)."""
        return f"ws://127.0.0.1:{self.http_port}/ws"

    @property
    def console_url(self) -> str:
        """The console served by this Asterisk over plain HTTP on loopback (a secure context)."""
        return f"http://127.0.0.1:{self.http_port}/static/index.html"

    def start(self) -> Asterisk:
        log = open(self.dir / "log" / "console.log", "ab")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*prefix, "chroot", str(ASTERISK_ROOT), "asterisk", "-C", self.conf, "-f", "-n",
             "-q"],
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
                 paced: bool | None = None, mediaenc: str | None = None,
                 source_wav: Path | None = None, rate: int = 48000, channels: int = 2,
                 modules: tuple[str, ...] = ()):
        """``source_wav``: send that WAV (aufile) instead of ausine's tone; ``rate`` and
        ``channels``: the source's and the (jack) player's format (ausine needs 48000/2);
        ``modules``: more baresip modules (e.g. ``plc.so``, its loss concealment)."""
        self.ext = ext
        self.rate = rate
        self.asterisk = asterisk
        self.dir = Path(tmp or f"/tmp/baresip-{uuid.uuid4().hex[:8]}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        self.rtp_ports = (41000 + (self.sip_port % 50) * 100, 41000 + (self.sip_port % 50) * 100
                          + 98)
        extra_modules = modules
        modules = ["g711.so", "aufile.so" if source_wav else "ausine.so", "account.so",
                   "ctrl_tcp.so", "menu.so"]
        if mediaenc:  # srtp (best effort), srtp-mand (RTP/SAVP); loaded before the accounts
            modules.insert(modules.index("account.so"), "srtp.so")
        extra = ""
        player = "audio_player nothing,none\n"
        # a recording call needs a paced player: jackd's dummy driver (ALSA null is unpaced)
        self.paced = record_dir is not None if paced is None else paced
        self.jack_name = f"ic-{uuid.uuid4().hex[:8]}" if self.paced else None
        self.jackd: subprocess.Popen | None = None
        if record_dir is not None:
            modules.append("sndfile.so")
            extra = f"snd_path {record_dir}\n"
        # after sndfile: audio filters load in order and the receive side runs them in reverse,
        # so sndfile then records what e.g. the plc filter made of the stream
        modules.extend(extra_modules)
        if self.paced:
            modules.append("jack.so")
            player = (f"audio_player jack,\nauplay_srate {rate}\nauplay_channels {channels}\n"
                      "auplay_format float\njack_connect_ports no\n")
        (self.dir / "config").write_text(
            "poll_method epoll\n"
            f"sip_listen 127.0.0.1:{self.sip_port}\n"
            "net_interface 127.0.0.1\n"
            + (f"audio_source aufile,{source_wav}\n" if source_wav
               else f"audio_source ausine,{tone_hz}\n")
            + player + "audio_alert nothing,none\n"
            f"ausrc_srate {rate}\nausrc_channels {channels}\n"
            "sip_transports udp\n"
            f"rtp_ports {self.rtp_ports[0]}-{self.rtp_ports[1]}\n"
            "module_path /usr/lib/baresip/modules\n"
            + "".join(f"module {m}\n" for m in modules)
            + f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}\n" + extra)
        (self.dir / "accounts").write_text(
            f"<sip:{ext}@127.0.0.1:{asterisk.port};transport=udp>;auth_pass={PASSWORDS[ext]};"
            f"regint=60;answermode={answer}" + (f";mediaenc={mediaenc}" if mediaenc else "")
            + "\n")
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
                ["jackd", "--no-realtime", "-n", self.jack_name, "-d", "dummy", "-r",
                 str(self.rate), "-p", str(self.rate // 50)], stdin=subprocess.DEVNULL,
                stdout=self.log, stderr=subprocess.STDOUT, env=env)
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
        media = sip.pop("media", {})
        gpio = sip.pop("gpio", {"pin_factory": "mock"})
        self.env = sip.pop("env", {})
        log_level = sip.pop("log_level", "debug")
        sections = {k: sip.pop(k) for k in ("update",) if k in sip}  # e.g. update.state_dir
        settings = {"server": "127.0.0.1", "port": server_port, "username": "5002",
                    "password": PASSWORDS["5002"], "display_name": "Door",
                    "local_port": self.sip_port, "register_expires": 60,
                    "retry_min": 1, "retry_max": 4, **sip}
        doc = {"sip": settings, "calls": calls, "control": {"socket": str(self.sock)},
               "media": {"rtp_port": 0, **media}, "audio": audio, "gpio": gpio,
               "log": {"level": log_level}, **sections}
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


@dataclass(frozen=True)
class WebCertificate:
    """The HTTPS/WSS certificate of ``./build.sh run``: ``cert`` (server certificate followed by
    its CA), ``key``, and ``ca``, the local authority a browser is told to trust."""

    cert: Path
    key: Path
    ca: Path


PRIVATE_NETS = ("127.0.0.0/255.0.0.0", "10.0.0.0/255.0.0.0", "172.16.0.0/255.240.0.0",
                "192.168.0.0/255.255.0.0", "169.254.0.0/255.255.0.0")


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {r.stderr.strip().splitlines()[-1:]}")


def web_certificate(names: list[str], folder: Path | None = None) -> WebCertificate:
    """A local CA (made once, 10 years, limited by name constraints to this host's names and
    private addresses, so trusting it cannot vouch for anyone else's site) and a server
    certificate for ``names`` (host names and IP addresses), re-issued when a name is missing
    or it expires within 30 days. Keys are readable by the owner only."""
    folder = folder or CACHE / "webrtc"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    ips = [n for n in names if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", n)]
    dns = [n for n in names if n not in ips]
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, crt = folder / "server.key", folder / "server.crt"
    if not (ca_key.exists() and ca_crt.exists()):
        permitted = [f"permitted;DNS:{d}" for d in dns]
        permitted += [f"permitted;IP:{net}" for net in PRIVATE_NETS]
        permitted += [f"permitted;IP:{ip}/255.255.255.255" for ip in ips if "." in ip
                      and not _private(ip)]
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", ca_key.name, "-out", ca_crt.name, "-days", "3650",
                 "-subj", f"/CN=Door intercom local CA ({socket.gethostname()})",
                 "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "nameConstraints=critical," + ",".join(permitted), cwd=folder)
        os.chmod(ca_key, 0o600)
        crt.unlink(missing_ok=True)
    names_file = folder / "server.names"
    wanted = sorted(set(names))
    stale = (not crt.exists() or not names_file.exists()
             or not set(wanted) <= set(names_file.read_text().split())
             or subprocess.run(["openssl", "x509", "-checkend", str(30 * 86400), "-noout",
                                "-in", str(crt)], capture_output=True).returncode != 0)
    if stale:
        san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{ip}" for ip in ips])
        (folder / "server.ext").write_text(
            f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", key.name, "-out", "server.csr",
                 "-subj", f"/CN={dns[0] if dns else ips[0]}", cwd=folder)
        os.chmod(key, 0o600)
        # 825 days: the longest validity Apple's browsers accept for a locally trusted certificate
        _openssl("x509", "-req", "-in", "server.csr", "-CA", ca_crt.name, "-CAkey", ca_key.name,
                 "-set_serial", f"0x{uuid.uuid4().hex}", "-days", "825",
                 "-extfile", "server.ext", "-out", "server.pem", cwd=folder)
        crt.write_bytes((folder / "server.pem").read_bytes() + ca_crt.read_bytes())
        for scratch in ("server.csr", "server.ext", "server.pem"):
            (folder / scratch).unlink()
        names_file.write_text("\n".join(wanted) + "\n")
    return WebCertificate(cert=crt, key=key, ca=ca_crt)


def _private(ip: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip).is_private


CHROMIUM = os.environ.get("INTERCOM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",  # a fake microphone ...
    "--use-fake-ui-for-media-stream",      # ... that the page may use without a prompt
    "--allow-loopback-in-peer-connection",  # ICE host candidates on 127.0.0.1
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # real addresses, not mDNS names
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-sandbox",
]


# Test instrumentation, not part of the console: drops non-loopback a=candidate lines from the
# local description SIP.js reads after ICE gathering.
LOOPBACK_ONLY_ICE = """
(() => {
  const desc = Object.getOwnPropertyDescriptor(RTCPeerConnection.prototype, "localDescription");
  Object.defineProperty(RTCPeerConnection.prototype, "localDescription", {
    configurable: true,
    get() {
      const d = desc.get.call(this);
      if (!d || !d.sdp) return d;
      const sdp = d.sdp.split("\\r\\n").filter((line) => !line.startsWith("a=candidate:") ||
        / (127\\.[0-9.]+|::1) [0-9]+ typ /.test(line)).join("\\r\\n");
      return new RTCSessionDescription({ type: d.type, sdp });
    },
  });
})();
"""


def tone_wav(path: Path, hz: float, seconds: float = 10.0, rate: int = 48000,
             amplitude: float = 0.3) -> Path:
    """A mono 16-bit WAV of a sine tone (Chromium's fake microphone loops it)."""
    import math
    import struct
    import wave

    n = int(rate * seconds)
    frames = struct.pack(f"<{n}h", *(int(32767 * amplitude * math.sin(2 * math.pi * hz * i / rate))
                                     for i in range(n)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return path


class Chromium:
    """Debian's Chromium driven by Playwright for Python: headless, a fresh profile, a fake
    microphone playing a ``mic_hz`` tone, WebRTC allowed on loopback. Nothing is downloaded:
    Playwright only drives the installed browser."""

    def __init__(self, tmp: Path, mic_hz: float = 1000.0, fake_ui: bool = True) -> None:
        """``fake_ui=False``: no automatic "allow" for the microphone (the page's permission
        then follows the browser's site settings)."""
        if not Path(CHROMIUM).exists():
            raise RuntimeError(f"no Chromium at {CHROMIUM}: run ./build.sh setup "
                               "(it installs Debian's chromium)")
        self.dir = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.mic = tone_wav(tmp / f"mic-{mic_hz:g}.wav", mic_hz)
        self.fake_ui = fake_ui
        self._pw: Any = None
        self.browser: Any = None

    # one Playwright driver per process (its sync API cannot be started twice in a thread),
    # shared by every Chromium that is running
    _driver: Any = None
    _users = 0

    def start(self) -> Chromium:
        from playwright.sync_api import sync_playwright

        if Chromium._driver is None:
            Chromium._driver = sync_playwright().start()
        Chromium._users += 1
        self._pw = Chromium._driver
        try:
            self.browser = self._pw.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=[*(a for a in CHROMIUM_ARGS
                        if self.fake_ui or a != "--use-fake-ui-for-media-stream"),
                      f"--use-file-for-fake-audio-capture={self.mic}"])
        except Exception:
            self.stop()
            raise
        return self

    def new_page(self, log: list[str] | None = None, loopback_only: bool = True) -> Any:
        """A page in a fresh browser context (its own storage); console messages go to
        ``log``. ``loopback_only``: the page's SDP offers and answers carry only 127.0.0.1 and
        ::1 ICE candidates (Chromium gathers every interface's address; tests must not hand
        the PBX any address but loopback)."""
        context = self.browser.new_context(viewport={"width": 420, "height": 860})
        if loopback_only:
            context.add_init_script(LOOPBACK_ONLY_ICE)
        page = context.new_page()
        if log is not None:
            page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
        return page

    def stop(self) -> None:
        if self.browser is not None:
            self.browser.close()
            self.browser = None
        if self._pw is not None:
            self._pw = None
            Chromium._users -= 1
            if Chromium._users == 0:
                Chromium._driver.stop()
                Chromium._driver = None


def console_link(base: str, **params: str) -> str:
    """The console URL with kiosk parameters (server, user, password, door, code)."""
    from urllib.parse import urlencode

    return f"{base}?{urlencode(params)}" if params else base


class ConsolePage:
    """The reception console (web/) in a Chromium page, driven by its stable element ids."""

    def __init__(self, chromium: Chromium, asterisk: Asterisk) -> None:
        self.log: list[str] = []
        self.page = chromium.new_page(self.log)
        self.asterisk = asterisk

    def open(self, **params: str) -> ConsolePage:
        """Load the console from Asterisk's HTTP server; with ``password`` among the kiosk
        parameters it logs in by itself."""
        self.page.goto(console_link(self.asterisk.console_url, **params))
        return self

    def status(self) -> str:
        return self.page.text_content("#status") or ""

    def wait_status(self, state: str, timeout: float = 15) -> str:
        """Wait for ``#status[data-state=state]`` (offline, connecting, registered, error)."""
        self.page.wait_for_selector(f"#status[data-state='{state}']", timeout=timeout * 1000)
        return self.status()

    def wait_ringing(self, timeout: float = 15) -> str:
        self.page.wait_for_selector("#incoming:not([hidden])", timeout=timeout * 1000)
        return self.page.text_content("#caller") or ""

    def wait_event(self, kind: str, since: int = 0, timeout: float = 15) -> dict:
        """The first ``window.consoleEvents`` entry of ``kind`` at index >= ``since``."""
        handle = self.page.wait_for_function(
            "([kind, since]) => window.consoleEvents.slice(since).find(e => e.type === kind)",
            arg=[kind, since], timeout=timeout * 1000)
        return handle.json_value()

    def event_count(self) -> int:
        return self.page.evaluate("window.consoleEvents.length")

    def click(self, element_id: str) -> None:
        self.page.click(f"#{element_id}")

    def enabled(self, element_id: str) -> bool:
        return self.page.is_enabled(f"#{element_id}")

    def audio(self, name: str) -> float:
        """``window.consoleAudio.<name>()``: remotePeakHz, micPeakHz, remoteLevel, micLevel."""
        return float(self.page.evaluate(f"window.consoleAudio.{name}()"))

    def media(self) -> dict:
        """``window.consoleCall.media()``: the ICE pair, DTLS state, SRTP cipher, codecs."""
        return self.page.evaluate("window.consoleCall.media()")

    def log_entries(self) -> list[str]:
        return self.page.locator("#log li").all_text_contents()

    def close(self) -> None:
        try:
            self.page.context.close()
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
