"""linphonec (Debian ``linphone-cli``, liblinphone 5.1) as a peer: the SIP client the report the
project grew from ran on the Pi, registered to a test PBX as one extension and driven through
its command line on stdin, its answers read from stdout.

Its own folder is its HOME (history, the ``.local/share/linphone`` database liblinphone needs
before it starts its SIP transports) and holds its rc file. SIP and RTP are bound to 127.0.0.1.
Audio: ``soundcard use files`` (no sound card): the call's microphone is a WAV played by
mediastreamer2's file player, what it hears is written by its file recorder. Both run on
mediastreamer2's ticker, which is paced by the system clock (10 ms ticks), so they play and
record in real time without a sound card — a 8 s call records 8 s.

Nothing here stands in for the intercom: this is a peer it must work with.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

from .loopback import free_port
from .waiting import wait_for


class Linphone:
    """linphonec registered as ``ext`` at ``server``:``port`` (UDP), with ``password``."""

    def __init__(self, server_port: int, ext: str, password: str, tmp: Path | None = None,
                 play_wav: Path | None = None, record_wav: Path | None = None,
                 auto_answer: bool = False, server: str = "127.0.0.1") -> None:
        """``play_wav``: what linphonec sends as its microphone (16-bit WAV); ``record_wav``:
        where it writes what it hears; ``auto_answer``: linphonec's ``-a``."""
        self.ext = ext
        self.server, self.port = server, server_port
        self.dir = Path(tmp or f"/tmp/linphone-{uuid.uuid4().hex[:8]}")
        (self.dir / ".local/share/linphone").mkdir(parents=True, exist_ok=True)
        self.play_wav, self.record_wav = play_wav, record_wav
        self.auto_answer = auto_answer
        self.sip_port = free_port()
        self.rtp_port = free_port()
        self.rc = self.dir / "linphonerc"
        self.rc.write_text(
            "[sip]\n"
            "bind_address=127.0.0.1\n"
            f"sip_port={self.sip_port}\nsip_tcp_port=0\nsip_tls_port=0\n"
            "default_proxy=0\nguess_hostname=0\nregister_only_when_network_is_up=0\n"
            "[net]\nfirewall_policy=0\n"
            f"[rtp]\nbind_address=127.0.0.1\naudio_rtp_port={self.rtp_port}\n"
            "[sound]\nechocancellation=0\n"
            "[video]\nenabled=0\ncapture=0\ndisplay=0\n"
            "[proxy_0]\n"
            f"reg_proxy=<sip:{server}:{server_port};transport=udp>\n"
            f"reg_identity=sip:{ext}@{server}\n"
            "reg_expires=60\nreg_sendregister=1\npublish=0\n"
            "[auth_info_0]\n"
            f"username={ext}\npasswd={password}\ndomain={server}\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self._out = ""
        self._seen = 0  # wait_output searches from here
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def start(self) -> Linphone:
        args = ["linphonec", "-c", str(self.rc), "-d", "5", "-l", str(self.dir / "linphone.log")]
        if self.auto_answer:
            args.append("-a")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=self.dir,
                                     env={**os.environ, "HOME": str(self.dir)})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.command("soundcard use files")
        self.wait_output(r"Using wav files instead of soundcard")
        if self.play_wav is not None:
            self.command(f"play {self.play_wav}")
        if self.record_wav is not None:
            self.command(f"record {self.record_wav}")
        wait_for(self._registered, 15, 0.3, f"linphonec {self.ext} to register")
        return self

    def _registered(self) -> bool:
        mark = len(self.output())
        self.command("status register")
        try:
            found = wait_for(lambda: re.search(r"registered[^\n]*\n", self.output()[mark:]), 3,
                             0.05, "linphonec's registration status")
        except AssertionError:
            return False
        return found.group(0).startswith("registered, identity=")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        for chunk in iter(lambda: os.read(fd, 4096), b""):
            with self._lock:
                self._out += chunk.decode(errors="replace")

    def output(self) -> str:
        with self._lock:
            return self._out

    def command(self, line: str) -> None:
        """One linphonec command line (``call URI``, ``answer``, ``terminate``, ...)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait_output(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first match of ``pattern`` in what linphonec printed after the previous match."""
        def find() -> re.Match[str] | None:
            return re.compile(pattern).search(self.output(), self._seen)
        try:
            found: re.Match[str] = wait_for(find, timeout, 0.05, f"linphonec: {pattern!r}")
        except AssertionError as e:
            raise AssertionError(f"{e}\nlinphonec printed:\n{self.output()[-2000:]}") from None
        self._seen = found.end()
        return found

    def dtmf(self, digits: str, gap: float = 0.4) -> None:
        """Key ``digits`` in the current call: a line of DTMF characters is linphonec's way
        to send them (RFC 2833/4733 events by default), one line per digit, ``gap`` apart so
        that each event ends before the next starts."""
        for digit in digits:
            self.command(digit)
            time.sleep(gap)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(2)
        self.proc = None

    def log_text(self) -> str:
        p = self.dir / "linphone.log"
        return p.read_text(errors="replace") if p.exists() else ""
