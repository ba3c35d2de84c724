"""RAUC on this host as the box runs it: the A/B update path's real commands without QEMU.

Owns, in one folder: two slot files; the boot script's state in two redundant 16 KiB files
(``abenv1.bin``/``abenv2.bin``, libubootenv's format, made with mkenvimage like the image's)
read and written by the real ``fw_printenv``/``fw_setenv`` — first on PATH as two-line wrappers
that add ``-c fw_env.config``, because RAUC calls them without it; RAUC's D-Bus service
(``rauc service --conf=... --override-boot-slot=X``, the box's ``uboot`` backend) on a private
bus (RAUC's client and service both use the session bus when ``DBUS_STARTER_BUS_TYPE=session``);
a "boot" that applies the boot script's rule (the first slot of BOOT_ORDER with attempts left,
one attempt used, through fw_setenv) and writes ``rauc.slot=X`` into a kernel command line file;
and, since systemd does not run here, a ``systemctl`` on PATH that answers ``show`` from a file
the test writes and records ``reboot``.

Seen with the host's rauc 1.8: ``rauc status mark-good|mark-bad booted`` rewrite the env files
as on the box; ``rauc install`` of a plain-format bundle (devtools.bundles, ``fmt="plain"``)
into a slot file runs the pre-install handler, writes the slot and makes it primary. A verity
bundle cannot be installed here (no device-mapper): the QEMU tests install those.

Knows nothing of the firmware.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from .processes import end
from .waiting import wait_for

ATTEMPTS = 3
COMPATIBLE = "intercom-rpi-arm64"
ENV_SIZE = 0x4000


class RaucHost:
    """One box's RAUC, U-Boot state and systemd stand-in under ``folder``; ``stop()`` ends
    the processes it started."""

    def __init__(self, folder: Path, keyring: Path | None = None, handler: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        for tool in ("rauc", "fw_setenv", "fw_printenv", "mkenvimage", "dbus-daemon"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed (rauc, libubootenv-tool, "
                                   "u-boot-tools, dbus)")
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.bin = folder / "bin"
        self.bin.mkdir(exist_ok=True)
        self.cmdline = folder / "cmdline"
        self.props = folder / "service.props"
        self.reboot_log = folder / "reboots"
        self.conf = folder / "system.conf"
        self.log_path = folder / "rauc.log"
        self.slots = {"A": folder / "slotA", "B": folder / "slotB"}
        self.booted: str | None = None
        self._extra = dict(env or {})
        self._bus: subprocess.Popen | None = None
        self._service: subprocess.Popen | None = None
        self._write_env_files()
        self._write_commands()
        self._write_conf(keyring, handler)
        self.service_state()

    # ------------------------------------------------------------------ files
    def _write_env_files(self) -> None:
        text = self.dir / "env.txt"
        text.write_text(f"BOOT_ORDER=A B\nBOOT_A_LEFT={ATTEMPTS}\nBOOT_B_LEFT={ATTEMPTS}\n")
        first, second = self.dir / "abenv1.bin", self.dir / "abenv2.bin"
        subprocess.run(["mkenvimage", "-r", "-s", hex(ENV_SIZE), "-o", str(first), str(text)],
                       check=True, capture_output=True)
        data = bytearray(first.read_bytes())
        data[4] = 0  # copy 2 is the older one (as the image build leaves them)
        second.write_bytes(bytes(data))
        (self.dir / "fw_env.config").write_text(
            f"{first} 0x0000 {hex(ENV_SIZE)}\n{second} 0x0000 {hex(ENV_SIZE)}\n")
        for path in self.slots.values():
            with path.open("wb") as f:
                f.truncate(32 << 20)

    def _write_commands(self) -> None:
        config = self.dir / "fw_env.config"
        for tool in ("fw_setenv", "fw_printenv"):
            wrapper = self.bin / tool
            wrapper.write_text(f'#!/bin/sh\nexec {shutil.which(tool)} -c "{config}" "$@"\n')
            wrapper.chmod(0o755)
        systemctl = self.bin / "systemctl"
        systemctl.write_text(
            "#!/bin/sh\n# systemd does not run on this host: show answers from a file, reboot "
            "is recorded\n"
            f'case "$1" in\n  show) cat "{self.props}" ;;\n'
            f'  reboot) echo reboot >> "{self.reboot_log}" ;;\n'
            '  *) echo "systemctl stand-in: $1 not supported" >&2; exit 1 ;;\nesac\n')
        systemctl.chmod(0o755)

    def _write_conf(self, keyring: Path | None, handler: Path | None) -> None:
        lines = ["[system]", f"compatible={COMPATIBLE}", "bootloader=uboot",
                 f"boot-attempts={ATTEMPTS}", f"boot-attempts-primary={ATTEMPTS}",
                 "bundle-formats=plain verity", f"data-directory={self.dir / 'data'}", ""]
        if keyring is not None:
            lines += ["[keyring]", f"path={keyring}", ""]
        if handler is not None:
            lines += ["[handlers]", f"pre-install={handler}", ""]
        for n, (name, path) in enumerate(self.slots.items()):
            lines += [f"[slot.rootfs.{n}]", f"device={path}", "type=ext4", f"bootname={name}",
                      ""]
        self.conf.write_text("\n".join(lines))
        (self.dir / "bus.conf").write_text(
            '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"'
            ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
            f"<busconfig><type>session</type><listen>unix:path={self.dir / 'bus.sock'}</listen>"
            '<policy context="default"><allow send_destination="*" eavesdrop="true"/>'
            '<allow eavesdrop="true"/><allow own="*"/>'
            "</policy></busconfig>\n")

    @property
    def env(self) -> dict[str, str]:
        """For every command of the box: the wrappers first on PATH, the private bus."""
        return {**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "DBUS_SESSION_BUS_ADDRESS": f"unix:path={self.dir / 'bus.sock'}",
                "DBUS_STARTER_BUS_TYPE": "session", "LC_ALL": "C", **self._extra}

    # ------------------------------------------------------------------ commands
    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env,
                              timeout=timeout, check=False)

    def rauc(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run("rauc", *args, timeout=timeout)

    def printenv(self) -> dict[str, str]:
        out = self.run("fw_printenv")
        if out.returncode != 0:
            raise RuntimeError(f"fw_printenv failed: {out.stderr.strip()}")
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    def setenv(self, key: str, value: str) -> None:
        out = self.run("fw_setenv", key, value)
        if out.returncode != 0:
            raise RuntimeError(f"fw_setenv {key} failed: {out.stderr.strip()}")

    def service_state(self, state: str = "active", restarts: int = 0, **props: str) -> None:
        """What ``systemctl show intercom.service`` answers from now on."""
        fields = {"LoadState": "loaded", "ActiveState": state, "SubState": "running",
                  "NRestarts": str(restarts), "Result": "success", "ExecMainCode": "0",
                  "ExecMainStatus": "0", "ConditionResult": "yes", **props}
        self.props.write_text("".join(f"{k}={v}\n" for k, v in fields.items()))

    def reboots(self) -> int:
        return len(self.reboot_log.read_text().splitlines()) if self.reboot_log.exists() else 0

    def service_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ------------------------------------------------------------------ boots
    def boot(self) -> str:
        """What U-Boot's boot script does, then RAUC's service as the booted slot sees it."""
        self.stop()
        state = self.printenv()
        chosen = None
        for slot in state.get("BOOT_ORDER", "A B").split():
            left = int(state.get(f"BOOT_{slot}_LEFT", "0"), 16)
            if slot in self.slots and left > 0:
                self.setenv(f"BOOT_{slot}_LEFT", f"{left - 1:x}")
                chosen = slot
                break
        if chosen is None:  # the script's last resort: every slot gets its attempts again
            for slot in self.slots:
                self.setenv(f"BOOT_{slot}_LEFT", f"{ATTEMPTS:x}")
            return self.boot()
        self.booted = chosen
        self.cmdline.write_text(f"console=ttyAMA0 ro rauc.slot={chosen}\n")
        self._start(chosen)
        return chosen

    def _start(self, booted: str) -> None:
        sock = self.dir / "bus.sock"
        sock.unlink(missing_ok=True)
        self._bus = subprocess.Popen(["dbus-daemon", "--nofork",
                                      f"--config-file={self.dir / 'bus.conf'}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(sock.exists, "the private D-Bus")
        log = self.log_path.open("ab")
        self._service = subprocess.Popen(
            ["rauc", "service", f"--conf={self.conf}", f"--override-boot-slot={booted}"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait(self._answers, "rauc service")

    def _answers(self) -> bool:
        try:
            return self.rauc("status", timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _wait(self, ready, what: str, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
        try:
            wait_for(ready, timeout, 0.05, what)
        except AssertionError:
            raise RuntimeError(f"{what} did not start: {self.service_log()[-2000:]}") from None

    def stop(self) -> None:
        for proc in (self._service, self._bus):
            end(proc)
        self._service = self._bus = None
