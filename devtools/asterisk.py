"""Asterisk 22 as the tests' PBX: from its Debian-unstable chroot (``INTERCOM_ASTERISK_ROOT``),
configured from ``pbx/`` with loopback-only ports and folders of its own, optionally with its
HTTP server for the browser console and a TLS transport. Owns the extensions' passwords.

Nothing here stands in for the intercom: this is the PBX it must work with.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from .loopback import free_port, host_ipv4_addresses
from .paths import REPO
from .waiting import wait_for

if TYPE_CHECKING:
    from .certificate import WebCertificate

ASTERISK_ROOT = Path(os.environ.get("INTERCOM_ASTERISK_ROOT", "/var/cache/intercom/asterisk-root"))
PASSWORDS = {"5001": "reception-5001-change-me", "5002": "door-5002-change-me",
             "5003": "test-5003-change-me", "5004": "console-5004-change-me"}
WEB = REPO / "web"


def _loopback_ice_candidates() -> str:
    """rtp.conf lines that make Asterisk advertise its (loopback-bound) RTP socket as
    127.0.0.1 in ICE: it lists every interface's address as a host candidate otherwise, which
    would hand the browser addresses other than loopback."""
    lines = "".join(f"{addr} => 127.0.0.1\n" for addr in host_ipv4_addresses())
    return f"\n[ice_host_candidates]\n{lines}" if lines else ""



class Asterisk:
    """Asterisk 22 from the chroot, configured from pbx/ with loopback-only ports."""

    def __init__(self, direct_media: bool = False, rtp_base: int = 31000,
                 bind: str = "127.0.0.1", port: int | None = None, netns: str | None = None,
                 media_address: str | None = None, media_encryption: str | None = None,
                 http_port: int | None = None, tls: WebCertificate | None = None,
                 tls_port: int = 8089, sip_tls: tuple[Path, Path] | None = None,
                 door_via: str | None = None) -> None:
        """``netns``: run inside that network namespace (the QEMU image tests: nothing Asterisk
        sends can leave the namespace). ``media_address``: the address Asterisk announces in
        SDP while its RTP stays bound to every address of its namespace (a QEMU guest reaches
        the host's loopback as 10.0.2.2). ``media_encryption``: e.g. "sdes": every endpoint
        demands SRTP. ``http_port``: enable Asterisk's HTTP server on 127.0.0.1 (SIP over
        ``ws://`` at ``/ws`` and the console from web/ at ``/static/``); ``tls``: also HTTPS/WSS
        on ``bind:tls_port`` with that certificate. Without ``http_port`` the HTTP server is
        off. ``sip_tls``: (certificate, key) PEM files for the SIP TLS transport on
        ``sip_tls_port``; without it the TLS transport is left out. ``door_via``: the
        ``host:port`` of a proxy the box registers with instead (pbx/kamailio/): the dial plan
        reaches 5002 through it (``DOOR`` in extensions.conf)."""
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
        self.door_via = door_via
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
                elif self.bind.startswith("127."):  # keep media on (this) loopback address
                    text = text.replace(
                        "rewrite_contact=yes\n", f"rewrite_contact=yes\nmedia_address={self.bind}"
                        "\nbind_rtp_to_media_address=yes\n", 1)
                if self.media_encryption:  # into the endpoint template: all extensions
                    text = text.replace("rewrite_contact=yes\n", "rewrite_contact=yes\n"
                                        f"media_encryption={self.media_encryption}\n", 1)
            if f.name == "rtp.conf":
                text = re.sub(r"rtpstart=\d+", f"rtpstart={self.rtp_base}", text)
                text = re.sub(r"rtpend=\d+", f"rtpend={self.rtp_base + 998}", text)
                if self.bind == "127.0.0.1":
                    text += _loopback_ice_candidates()
            if f.name == "extensions.conf" and self.door_via:
                text = re.sub(r"(?m)^DOOR=.*$", f"DOOR=PJSIP/5002/sip:5002@{self.door_via}", text)
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

