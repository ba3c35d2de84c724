"""The x86 test guest: Debian's own kernel booted in QEMU (TCG) on this machine's root, for tests
that need kernel features the build machine's kernel lacks (``sch_fq``, ``sch_etf``).

Owns preparing the guest and booting it. ``prepare(cache)`` fetches with ``apt-get download``
(the package registry is the only network CI has) the kernel that this machine's apt says
``linux-image-amd64`` depends on, and ``busybox-static``; it takes the kernel image and only the
modules the guest needs (9p over virtio, ``sch_fq``, ``sch_etf`` and what ``modules.dep``, made
by ``depmod`` as the package's postinst would, says they need) and writes an initrd (cpio newc,
written here, gzip) whose ``/init`` is ``INIT`` below. It is cached in
``<cache>/kguest-<key>``, the key hashing both packages' versions, the module list and
``INIT``: a warm call downloads nothing.

``run(guest, command, timeout, share)`` boots it: ``qemu-system-x86_64 -accel tcg`` (nested KVM
hangs at boot on the build machine), the host's ``/`` read-only over virtio-9p, ``share``
read-write at its own path, no network device but ``lo``; ``command`` runs with ``/bin/sh -c``
chrooted into the host's root (so the host's python, venv, ``tc`` are there, the same x86_64
binaries), in ``share``; its exit status comes back. Knows nothing of the firmware.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.processes import end

KERNEL_META = "linux-image-amd64"
BUSYBOX = "busybox-static"
# the modules the guest loads; modules.dep adds what they need (virtio, 9pnet, netfs, ...)
ROOTS = ("virtio_pci", "9pnet_virtio", "9p", "sch_fq", "sch_etf")
APT_OPTS = ("-o", "Acquire::Check-Valid-Until=false", "-o", "Acquire::Retries=3")
CMDLINE = "console=ttyS0 panic=-1 quiet"
KEEP = 2  # guests kept in the cache (the newest)

# PID 1 of the guest (busybox sh). /kguest/command and /kguest/share come in a second cpio that
# run() appends for each boot. A set-up step that fails says KGUEST-ERROR and powers off.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "KGUEST-ERROR: $*"; poweroff -f; }
while read -r m; do insmod "/mods/$m" || fail "insmod $m"; done < /mods/order
R=/mnt
NINEP=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$NINEP,ro,cache=loose" hostroot $R || fail "mount the host's root (9p hostroot)"
for d in proc sys dev; do mount -o bind /$d $R/$d || fail "bind-mount /$d"; done
for d in /tmp /run /dev/shm; do mkdir -p $R$d; mount -t tmpfs tmpfs $R$d || fail "tmpfs on $d"; done
SHARE=$(cat /kguest/share)
mkdir -p "$R$SHARE" 2>/dev/null
mount -t 9p -o "$NINEP" share "$R$SHARE" || fail "mount the share at $SHARE"
ip link set lo up || fail "ip link set lo up"
echo  # the BIOS left the cursor mid-line
echo "KGUEST-READY $(cut -d' ' -f1 /proc/uptime)"
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
  chroot $R /bin/sh -c 'cd "$1" && exec /bin/sh -c "$2"' kguest "$SHARE" "$(cat /kguest/command)"
rc=$?
echo "KGUEST-END $(cut -d' ' -f1 /proc/uptime)"
echo "KGUEST-RC=$rc"
sync
poweroff -f
"""


class KguestError(RuntimeError):
    """The guest could not be prepared or did not run the command; the message names why."""


class KguestTimeoutError(KguestError):
    """The guest ran past the caller's time budget and was killed (the console's tail is in
    the message)."""


@dataclass(frozen=True)
class Guest:
    """A prepared guest: the kernel image, the initrd, and what they are."""

    kernel: Path
    initrd: Path
    release: str        # the kernel's ``uname -r`` (e.g. 6.1.0-57-amd64)
    package: str        # the kernel package and its version
    modules: tuple[str, ...]  # the .ko files the initrd loads, in order
    download_bytes: int  # the two .deb files apt fetched when it was prepared


def _apt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd,
                              env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError:
        raise KguestError(f"kguest: no {args[0]}: the guest is fetched with apt "
                          f"(a Debian machine)") from None


def _first_error(text: str, otherwise: str = "no message") -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E:")]
    return (errors or lines or [otherwise])[0]


def candidates(*packages: str) -> dict[str, str]:
    """The version apt would fetch of each of ``packages`` (one apt-cache call: ~0.8 s each)."""
    done = _apt("apt-cache", "show", "--no-all-versions", *packages)
    found = dict(re.findall(r"^Package: (\S+)\n(?:.+\n)*?Version: (\S+)$", done.stdout, re.M))
    if missing := [p for p in packages if p not in found]:
        raise KguestError(f"kguest: apt knows no package {' '.join(missing)} "
                          f"({_first_error(done.stderr, 'not in its lists')}; apt-get update?)")
    return found


def kernel_package() -> str:
    """The kernel package ``linux-image-amd64`` depends on in this machine's apt lists."""
    done = _apt("apt-cache", "depends", KERNEL_META)
    found = re.search(r"^\s*Depends: (linux-image-\S+)", done.stdout, re.M)
    if done.returncode or not found:
        raise KguestError(f"kguest: apt knows no {KERNEL_META} depending on a kernel "
                          f"({_first_error(done.stderr or done.stdout)}; apt-get update?)")
    return found.group(1)


def cpio_newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A cpio archive in the kernel's initramfs format ("newc") of (name, mode, data,
    (rdev major, minor)) entries, with its trailer."""
    out = bytearray()

    def put(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(data), 0, 0, *rdev,
                  len(raw), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        put(ino, name, mode, data, rdev)
    put(0, "TRAILER!!!", 0, b"", (0, 0))
    return bytes(out)


def _dir(name: str) -> tuple[str, int, bytes, tuple[int, int]]:
    return (name, 0o040755, b"", (0, 0))


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[str, int, bytes, tuple[int, int]]:
    return (name, 0o100000 | mode, data, (0, 0))


def _module_name(path: str) -> str:
    return re.sub(r"\.ko(\.\w+)?$", "", path.rsplit("/", 1)[-1]).replace("-", "_")


def load_order(moddir: Path, roots: tuple[str, ...] = ROOTS) -> list[str]:
    """The module files (paths relative to ``moddir``) to insert for ``roots``, each after
    what it needs, from ``modules.dep``; a root built into the kernel needs no file."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, needs = line.partition(":")
        deps[path] = needs.split()
    by_name = {_module_name(path): path for path in deps}
    builtin_file = moddir / "modules.builtin"
    builtin = ({_module_name(p) for p in builtin_file.read_text().split()}
               if builtin_file.exists() else set())
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for need in deps.get(path, []):
            visit(need)
        order.append(path)

    for root in roots:
        name = root.replace("-", "_")
        if name in by_name:
            visit(by_name[name])
        elif name not in builtin:
            raise KguestError(f"kguest: the kernel in {moddir} has no module {root} "
                              f"(neither in modules.dep nor built in)")
    return order


def _module_bytes(path: Path) -> bytes:
    """A module file as insmod takes it (busybox's insmod wants it uncompressed)."""
    raw = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(raw)
    if path.name.endswith(".ko.zst"):
        if not shutil.which("zstd"):
            raise KguestError(f"kguest: {path.name} is zstd-compressed and there is no zstd "
                              f"(Debian package zstd)")
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True,
                              check=True).stdout
    return raw


def _one(paths: list[Path], what: str, deb: Path) -> Path:
    if len(paths) != 1:
        raise KguestError(f"kguest: {deb.name} holds {len(paths)} {what}, not one")
    return paths[0]


def _build(work: Path, kernel_deb: Path, busybox_deb: Path) -> tuple[bytes, bytes, str, list[str]]:
    """(vmlinuz, initrd.gz, kernel release, modules loaded) from the two packages."""
    kx, bx = work / "kernel", work / "busybox"
    for deb, dest in ((kernel_deb, kx), (busybox_deb, bx)):
        done = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True,
                              text=True)
        if done.returncode:
            raise KguestError(f"kguest: dpkg-deb -x {deb.name}: {_first_error(done.stderr)}")
    vmlinuz = _one(sorted(kx.glob("boot/vmlinuz-*")), "boot/vmlinuz-*", kernel_deb)
    release = vmlinuz.name.removeprefix("vmlinuz-")
    if not (kx / "lib" / "modules").is_dir() and (kx / "usr" / "lib" / "modules").is_dir():
        (kx / "lib").symlink_to("usr/lib")  # a merged-/usr package: depmod looks in lib/
    moddir = kx / "lib" / "modules" / release
    # the package has no modules.dep: its postinst makes it with depmod, and so do we
    done = subprocess.run(["depmod", "-b", str(kx), release], capture_output=True, text=True)
    if done.returncode or not (moddir / "modules.dep").exists():
        raise KguestError(f"kguest: depmod for {release} failed (Debian package kmod): "
                          f"{_first_error(done.stderr)}")
    order = load_order(moddir)
    busybox = _one([p for p in (bx / "bin" / "busybox", bx / "usr" / "bin" / "busybox")
                    if p.is_file()], "busybox binaries", busybox_deb)
    names = [_module_name(path) + ".ko" for path in order]
    entries = [_dir("bin"), _dir("dev"), ("dev/console", 0o020600, b"", (5, 1)), _dir("proc"),
               _dir("sys"), _dir("mnt"), _dir("mods"),
               _file("init", INIT.encode(), 0o755),
               _file("bin/busybox", busybox.read_bytes(), 0o755),
               _file("mods/order", "".join(f"{n}\n" for n in names).encode())]
    entries += [_file(f"mods/{n}", _module_bytes(moddir / p))
                for n, p in zip(names, order, strict=True)]
    return vmlinuz.read_bytes(), gzip.compress(cpio_newc(entries), 6), release, names


def _download(work: Path, package: str, version: str) -> Path:
    done = _apt("apt-get", *APT_OPTS, "download", f"{package}={version}", cwd=work)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if done.returncode or not debs:
        raise KguestError(f"kguest: apt-get download {package}={version} failed: "
                          f"{_first_error(done.stderr)}")
    return debs[0]


def prepare(cache: Path) -> Guest:
    """The guest for this machine's ``linux-image-amd64``, from ``cache`` or made there. When
    apt's lists do not know the packages or name versions the mirror no longer has (a machine
    whose packages were all installed long ago: build.sh then never ran ``apt-get update``),
    the lists are refreshed once (as root) and the guest made from the new ones."""
    try:
        return _prepare(cache)
    except KguestError as first:
        if os.geteuid() != 0 or _apt("apt-get", *APT_OPTS, "update", "-q").returncode != 0:
            raise first from None
        return _prepare(cache)


def _prepare(cache: Path) -> Guest:
    kpkg = kernel_package()
    versions = candidates(kpkg, BUSYBOX)
    kver, bver = versions[kpkg], versions[BUSYBOX]
    key = hashlib.sha256(f"{kpkg}={kver}\n{BUSYBOX}={bver}\n{' '.join(ROOTS)}\n{INIT}"
                         .encode()).hexdigest()[:16]
    home = cache / f"kguest-{key}"
    if not (home / "guest.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".kguest-", dir=cache))
        try:
            kdeb, bdeb = _download(work, kpkg, kver), _download(work, BUSYBOX, bver)
            vmlinuz, initrd, release, names = _build(work, kdeb, bdeb)
            made = work / "guest"
            made.mkdir()
            (made / "vmlinuz").write_bytes(vmlinuz)
            (made / "initrd.gz").write_bytes(initrd)
            (made / "guest.json").write_text(json.dumps({
                "release": release, "package": f"{kpkg} {kver}", "busybox": bver,
                "modules": names, "download_bytes": kdeb.stat().st_size + bdeb.stat().st_size}))
            try:
                made.rename(home)
            except OSError:
                if not (home / "guest.json").exists():  # not another run that was quicker
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for old in sorted(cache.glob("kguest-*"), key=lambda p: p.stat().st_mtime)[:-KEEP]:
            if old != home:
                shutil.rmtree(old, ignore_errors=True)
    info = json.loads((home / "guest.json").read_text())
    return Guest(kernel=home / "vmlinuz", initrd=home / "initrd.gz", release=info["release"],
                 package=info["package"], modules=tuple(info["modules"]),
                 download_bytes=info["download_bytes"])


def _qemu_path(path: Path) -> str:
    return str(path).replace(",", ",,")  # QEMU's option syntax


def qemu_args(guest: Guest, initrd: Path, share: Path) -> list[str]:
    """The QEMU command line: TCG, the host's root read-only and ``share`` read-write over
    virtio-9p, no network device (the guest has only ``lo``), the serial console on stdout."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise KguestError("kguest: no qemu-system-x86_64 (Debian package qemu-system-x86)")
    fs = "security_model=none,multidevs=remap"
    return [qemu, "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2", "-nographic",
            "-no-reboot", "-nic", "none",
            "-kernel", _qemu_path(guest.kernel), "-initrd", _qemu_path(initrd),
            "-append", CMDLINE,
            "-virtfs", f"local,path=/,mount_tag=hostroot,readonly=on,{fs}",
            "-virtfs", f"local,path={_qemu_path(share)},mount_tag=share,{fs}"]


def _tail(console: str, lines: int = 40) -> str:
    return "\n".join(console.splitlines()[-lines:])


def run(guest: Guest, command: str, timeout: float, share: Path) -> tuple[int, str]:
    """Boot ``guest``, run ``command`` (``/bin/sh -c``, chrooted into the host's root, working
    directory ``share``) and power off: (its exit status, the whole serial console).

    ``share`` (an existing directory; a test's ``tmp_path``) is the one place the guest can
    write that the host sees, at the same path inside the guest: results go there. The guest's
    PATH is Debian's default, so name the interpreter you want (e.g. ``sys.executable``); its
    /tmp, /run and /dev/shm are its own tmpfs; ``lo`` is up; ``sch_fq`` and ``sch_etf`` are
    loaded. The console holds the kernel's warnings, the command's output (between the
    ``KGUEST-READY <uptime>`` and ``KGUEST-END <uptime>`` lines, guest seconds since boot) and
    ``KGUEST-RC=<n>``. A guest that runs past ``timeout`` seconds (boot included) is killed:
    KguestTimeoutError with the console's tail; one that cannot set up: KguestError.
    """
    share = share.resolve()
    if not share.is_dir() or "\n" in str(share):
        raise KguestError(f"kguest: the share {share} is not a directory")
    with tempfile.TemporaryDirectory(prefix="kguest-") as tmp:
        initrd = Path(tmp) / "initrd.gz"
        extra = cpio_newc([_dir("kguest"), _file("kguest/command", command.encode()),
                           _file("kguest/share", str(share).encode())])
        # the kernel unpacks concatenated archives in turn: the cached one, then this boot's
        initrd.write_bytes(guest.initrd.read_bytes() + gzip.compress(extra))
        proc = subprocess.Popen(qemu_args(guest, initrd, share), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        chunks: list[bytes] = []
        assert proc.stdout is not None
        console_fd = proc.stdout.fileno()
        reader = threading.Thread(target=lambda: chunks.extend(iter(
            lambda: os.read(console_fd, 65536), b"")), name="kguest-console")
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            end(proc, wait=2)
            reader.join(5)
            proc.stdout.close()
    console = _text(chunks)
    if timed_out:
        raise KguestTimeoutError(f"kguest: the guest ran past its {timeout:.0f} s budget and "
                                 f"was killed (command {command!r}); console tail:\n"
                                 f"{_tail(console)}")
    rcs = re.findall(r"^KGUEST-RC=(\d+)$", console, re.M)
    if not rcs:
        failed = re.findall(r"^KGUEST-ERROR: (.*)$", console, re.M)
        why = (f"could not set up: {failed[-1]}" if failed else
               f"stopped (qemu exit status {proc.returncode}) without the command's exit status")
        raise KguestError(f"kguest: the guest {why}; console tail:\n{_tail(console)}")
    return int(rcs[-1]), console


def _text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def main(argv: list[str]) -> int:
    """``python -m devtools.kguest [COMMAND]``: prepare the guest (in INTERCOM_CACHE), and with
    a command boot it and run that in the current directory; exits with its status."""
    from devtools.paths import CACHE
    try:
        started = time.monotonic()
        guest = prepare(CACHE)
        print(f"kguest: {guest.package} ({guest.release}), {len(guest.modules)} modules, "
              f"{guest.kernel.parent} ({time.monotonic() - started:.1f} s)", file=sys.stderr)
        if not argv:
            return 0
        started = time.monotonic()
        rc, console = run(guest, " ".join(argv), timeout=600, share=Path.cwd())
    except KguestError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(console, end="")
    print(f"kguest: rc {rc}, {time.monotonic() - started:.1f} s", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
