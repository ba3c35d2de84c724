"""The built SD-card image booted in qemu-system-aarch64 (-M virt, TCG) with a test
intercom.yaml on its boot partition, pointing at an Asterisk on the host's loopback through QEMU
user networking: it must register, its root must be read-only, and it must register again after a
hard power-off. Runs when ``images/out`` holds an image (``./build.sh image``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from devtools.components import PASSWORDS, REPO, Asterisk, wait_for

from .conftest import BOOT_TIMINGS

pytestmark = pytest.mark.image
OUT = REPO / "images" / "out"
SECTOR = 512
BOOT_START = 8192  # images/assemble.sh


def built_image() -> Path | None:
    images = sorted(OUT.glob("intercom-*-arm64.img"))
    return images[-1] if images else None


def mtools(img: Path, *args: str) -> None:
    subprocess.run([args[0], "-i", f"{img}@@{BOOT_START * SECTOR}", *args[1:]], check=True,
                   capture_output=True)


class Qemu:
    def __init__(self, img: Path, kernel: Path, initrd: Path, log: Path) -> None:
        self.cmd = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2",
                    "-m", "1024", "-nographic", "-no-reboot", "-kernel", str(kernel),
                    "-initrd", str(initrd), "-append",
                    "root=LABEL=rootfs rootfstype=ext4 ro rootwait console=ttyAMA0 "
                    "systemd.show_status=1",
                    "-drive", f"file={img},format=raw,if=virtio",
                    "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile="]
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        return time.monotonic()

    def power_off(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # no shutdown: the hard power cut the image must survive
            self.proc.wait()

    def console(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def boot_once(pbx: Asterisk, img: Path, tmp: Path, boot: int) -> float:
    """Boot, wait until 5002 is registered in Asterisk, check the self-test, cut the power."""
    vm = Qemu(img, tmp / "vmlinuz", tmp / "initrd.img", tmp / f"console{boot}.log")
    t0 = vm.start()
    try:
        wait_for(lambda: pbx.registered("5002") or vm.proc.poll() is not None, 900, 2,
                 f"the booted image to register (boot {boot})")
        assert vm.proc is not None and vm.proc.poll() is None, vm.console()[-3000:]
        took = time.monotonic() - t0
        wait_for(lambda: "INTERCOM-SELFTEST" in vm.console(), 60, 1, "the self-test")
        assert "INTERCOM-SELFTEST: root is read-only" in vm.console()
        return took
    finally:
        vm.power_off()


@pytest.mark.skipif(built_image() is None, reason="no image in images/out: ./build.sh image")
def test_image_boots_registers_read_only_and_survives_power_cut(tmp_path: Path) -> None:
    src = built_image()
    assert src is not None
    img = tmp_path / "sd.img"
    shutil.copy(src, img)
    pbx = Asterisk()
    pbx.start()
    try:
        config = {"sip": {"server": "10.0.2.2", "port": pbx.port, "username": "5002",
                          "password": PASSWORDS["5002"], "register_expires": 60,
                          "retry_min": 2, "retry_max": 10},
                  "system": {"hostname": "door-test"}, "gpio": {"pin_factory": "mock"}}
        (tmp_path / "intercom.yaml").write_text(json.dumps(config))
        (tmp_path / "selftest").write_text("")
        mtools(img, "mcopy", "-o", str(tmp_path / "intercom.yaml"), "::intercom.yaml")
        mtools(img, "mcopy", "-o", str(tmp_path / "selftest"), "::selftest")
        mtools(img, "mcopy", "::vmlinuz", str(tmp_path / "vmlinuz"))
        mtools(img, "mcopy", "::initrd.img", str(tmp_path / "initrd.img"))
        timings = []
        for boot in (1, 2):
            timings.append(boot_once(pbx, img, tmp_path, boot))
            # forget the binding (Asterisk keeps contacts in astdb): the next boot must register
            pbx.stop()
            (pbx.dir / "lib" / "astdb.sqlite3").unlink(missing_ok=True)
            pbx.start()
        line = (f"image boot: QEMU start -> registered in Asterisk: {timings[0]:.0f} s (first "
                f"boot), {timings[1]:.0f} s (after a hard power-off)")
        print(line)
        BOOT_TIMINGS.append(line)
    finally:
        pbx.cleanup()
