"""Booting the built SD-card image in qemu-system-aarch64 for the image tests.

Owns: finding the image and what ``./build.sh image`` left beside it (U-Boot for QEMU virt, the
root slot's ext4), putting an intercom.yaml (and the self-test marker) on a sparse copy's FAT
boot partition with mtools, taking files from that partition or from the root slot (debugfs),
the virt device tree with named GPIO lines, the QEMU virt command line that boots the card
through U-Boot and its A/B boot script, a network namespace holding only loopback (so nothing
the guest or Asterisk sends can leave this machine), QMP, and reading what the guest reports on
its serial console (INTERCOM-GPIO / -STATUS / -SOUND / -CHAIN lines, written by
images/overlay/usr/lib/intercom/selftest-report).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devtools.paths import REPO

OUT = REPO / "images" / "out"
SECTOR = 512
BOOT_START = 8192  # images/assemble.sh
# QEMU virt's PL061 has 8 lines; line 3 is what QMP system_powerdown pulses for 100 ms. The
# device tree we boot with names them like a Pi's header so the plain profile's pins resolve.
VIRT_LINE_NAMES = ["GPIO5", "GPIO6", "GPIO13", "GPIO17", "GPIO19", "GPIO12", "GPIO26", "GPIO27"]


def built_image() -> Path | None:
    images = sorted(OUT.glob("intercom-*-arm64.img"))
    return images[-1] if images else None


def image_version(img: Path) -> str:
    return img.name.removeprefix("intercom-").removesuffix("-arm64.img")


def root_ext4(img: Path) -> Path:
    """The root written into slot A of ``img`` (assemble.sh keeps it: bundles are made of it)."""
    return img.with_name(f"rootfs-{image_version(img)}.ext4")


def uboot_qemu() -> Path:
    """Debian's u-boot-qemu (qemu_arm64) that the image build left in images/out."""
    return OUT / "u-boot-qemu.bin"


def root_file(img: Path, path: str, tmp: Path) -> Path:
    """A file of the image's root slot A (the kernel, initrd), read with debugfs."""
    dest = tmp / Path(path).name
    subprocess.run(["debugfs", "-R", f"dump {path} {dest}", str(root_ext4(img))], check=True,
                   capture_output=True)
    assert dest.stat().st_size > 0, f"{path} is not in the image's root"
    return dest


def virt_args(img: Path, console: Path, dtb: Path | None = None, mac: str | None = None,
              machine: list[str] | None = None) -> list[str]:
    """QEMU virt booting the card the way a Pi does: U-Boot runs the card's boot.scr, which
    picks a root slot and boots that slot's kernel and initrd. ``dtb`` replaces QEMU's own tree
    (U-Boot hands it to the kernel); no -no-reboot: a reboot goes through U-Boot again."""
    args = ["-M", "virt,acpi=off", *(machine or []), "-nographic", "-bios", str(uboot_qemu()),
            "-drive", f"file={img},format=raw,if=virtio",
            "-netdev", "user,id=n0",
            "-device", "virtio-net-pci,netdev=n0,romfile=" + (f",mac={mac}" if mac else ""),
            "-serial", f"file:{console}", "-monitor", "none"]
    if dtb is not None:
        args += ["-dtb", str(dtb)]
    return args


def mtools(img: Path, *args: str) -> None:
    subprocess.run([args[0], "-i", f"{img}@@{BOOT_START * SECTOR}", *args[1:]], check=True,
                   capture_output=True)


def prepare_card(src: Path, tmp: Path, config: dict[str, Any], size: int | None = None,
                 extra: Path | None = None) -> Path:
    """A copy of the image with our intercom.yaml and the self-test marker on its boot
    partition; ``size`` grows it (QEMU's raspi SD card must be a power of two); ``extra`` is
    a folder copied onto the boot partition under its own name."""
    img = tmp / "sd.img"
    # the card is 2.8 GiB with empty slot B and data: a sparse copy writes only what is there
    subprocess.run(["cp", "--sparse=always", str(src), str(img)], check=True)
    if size:
        with open(img, "r+b") as f:
            f.truncate(size)
    (tmp / "intercom.yaml").write_text(json.dumps(config))
    (tmp / "selftest").write_text("")
    mtools(img, "mcopy", "-o", str(tmp / "intercom.yaml"), "::intercom.yaml")
    mtools(img, "mcopy", "-o", str(tmp / "selftest"), "::selftest")
    if extra is not None:
        mtools(img, "mcopy", "-s", "-o", str(extra), f"::{extra.name}")
    return img


def gpiozero2_folder(tmp: Path, line: str) -> Path:
    """gpiozero 2.x (and colorzero, which it imports) from this venv, for the guest's
    selftest-gpiozero2, which drives ``line`` with it."""
    import importlib.metadata

    import colorzero
    import gpiozero

    folder = tmp / "gpiozero2"
    for module in (gpiozero, colorzero):
        shutil.copytree(Path(module.__file__).parent, folder / module.__name__,
                        ignore=shutil.ignore_patterns("__pycache__"))
        dist = importlib.metadata.distribution(module.__name__)
        info = Path(str(dist.locate_file(""))) / str(dist._path.name)  # type: ignore[attr-defined]
        shutil.copytree(info, folder / info.name)
    (folder / "LINE").write_text(line + "\n")
    return folder


def boot_file(img: Path, name: str, tmp: Path) -> Path:
    """A file from the card's boot partition; a missing one fails the test by name."""
    dest = tmp / name
    mtools(img, "mcopy", "-o", f"::{name}", str(dest))
    return dest


def power_of_two(n: int) -> int:
    size = 1
    while size < n:
        size *= 2
    return size


def virt_dtb(tmp: Path, machine: list[str]) -> Path:
    """QEMU's own virt device tree, with the PL061 lines named like header pins and the
    gpio-keys node (which would claim line 3 as the power button) removed."""
    raw, dts, out = tmp / "virt.dtb", tmp / "virt.dts", tmp / "virt-gpio.dtb"
    subprocess.run(["qemu-system-aarch64", "-M", f"virt,acpi=off,dumpdtb={raw}", *machine,
                    "-nographic", "-net", "none"], check=True, capture_output=True)
    subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", "-o", str(dts), str(raw)],
                   check=True)
    text = dts.read_text()
    text, n = re.subn(r"\n\tgpio-keys \{.*?\n\t\};\n", "\n", text, flags=re.S)
    assert n == 1, "QEMU's virt device tree has no gpio-keys node to remove"
    names = ", ".join(f'"{n}"' for n in VIRT_LINE_NAMES)
    text, n = re.subn(r"(\n\tpl061@9030000 \{\n)", rf"\1\t\tgpio-line-names = {names};\n", text)
    assert n == 1, "QEMU's virt device tree has no pl061@9030000 node"
    dts.write_text(text)
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(out), str(dts)], check=True)
    return out


@contextmanager
def loopback_namespace() -> Iterator[str]:
    """A network namespace with only ``lo`` up: QEMU's user network and Asterisk run in it."""
    name = f"icimg-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


class Qemu:
    def __init__(self, args: list[str], console: Path, netns: str, qmp: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        """``env``: added to QEMU's environment (an ``-audiodev alsa`` device's asoundrc)."""
        self.cmd = ["ip", "netns", "exec", netns, "qemu-system-aarch64", *args]
        self.env = {**os.environ, **env} if env else None
        if qmp is not None:
            self.cmd += ["-qmp", f"unix:{qmp},server=on,wait=off"]
        self.qmp_path = qmp
        self.log = console
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> Qemu:
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=open(self.log.with_suffix(".qemu"), "ab"),
                                     stderr=subprocess.STDOUT, env=self.env)
        self.started = time.monotonic()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def power_off(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()  # no shutdown: the hard power cut the image must survive
            self.proc.wait()

    def console(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def qmp(self, command: str) -> dict:
        assert self.qmp_path is not None
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.qmp_path))
            f = s.makefile("rwb")
            json.loads(f.readline())  # greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply

    # what the guest's reporter printed
    def reports(self, tag: str) -> list[tuple[float, Any]]:
        found = []
        for m in re.finditer(rf"INTERCOM-{tag} (\d+\.\d+) (.*)", self.console()):
            try:
                found.append((float(m.group(1)), json.loads(m.group(2))))
            except json.JSONDecodeError:
                continue  # a line the kernel's own console output cut in two
        return found

    def last(self, tag: str) -> Any:
        got = self.reports(tag)
        return got[-1][1] if got else None
