"""baresip as the reception phone in the tests: a real softphone registered to the tests'
Asterisk, driven through its ctrl_tcp module, with a tone or a WAV as its microphone and,
when asked, jackd's dummy driver as a paced player whose decoded audio sndfile records.

Nothing here stands in for the intercom: this is a peer it must work with.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

from .asterisk import PASSWORDS, Asterisk
from .loopback import free_port
from .waiting import wait_for


class Baresip:
    """A real baresip softphone registered to Asterisk, driven through its ctrl_tcp module.

    Audio: ausine as source; no player unless ``record_dir`` is given (sndfile then records the
    decoded call audio as WAV files there).
    """

    def __init__(self, asterisk: Asterisk, ext: str = "5001", answer: str = "manual",
                 tone_hz: int = 440, record_dir: Path | None = None, tmp: Path | None = None,
                 paced: bool | None = None, mediaenc: str | None = None,
                 source_wav: Path | None = None, rate: int = 48000, channels: int = 2,
                 modules: tuple[str, ...] = (), prefix: tuple[str, ...] = ()):
        """``source_wav``: send that WAV (aufile) instead of ausine's tone; ``rate`` and
        ``channels``: the source's and the (jack) player's format (ausine needs 48000/2);
        ``modules``: more baresip modules (e.g. ``plc.so``, its loss concealment);
        ``prefix``: a command baresip runs under (e.g. valgrind's)."""
        self.prefix = list(prefix)
        self.ext = ext
        self.rate = rate
        # the Asterisk's own loopback address (a second PBX may sit on 127.0.0.12)
        self.pbx_host = asterisk.bind if asterisk.bind.startswith("127.") else "127.0.0.1"
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
            f"<sip:{ext}@{self.pbx_host}:{asterisk.port};transport=udp>;"
            f"auth_pass={PASSWORDS[ext]};"
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
        self.proc = subprocess.Popen([*self.prefix, "baresip", "-f", str(self.dir)],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        def connect():
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
            except OSError:
                return None
        wait = 60 if self.prefix else 10  # under valgrind it starts far slower
        self.sock = wait_for(connect, wait, 0.1, "baresip ctrl_tcp")
        self.sock.settimeout(0.2)
        wait_for(lambda: self.asterisk.registered(self.ext), wait, 0.1,
                 f"baresip {self.ext} to register")
        return self

    def command(self, command: str, params: str = "") -> None:
        payload = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        assert self.sock is not None
        self.sock.sendall(f"{len(payload)}:".encode() + payload + b",")

    def _read(self) -> None:
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

