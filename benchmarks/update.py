"""What an update costs a box: the 20 ms loop during an install, and (QEMU) the download +
install time and the reboot to registered after an update.

1. ``run_install_load``, on this host: the box's media loop in its default configuration
   (``media.realtime_priority`` SCHED_FIFO, ``audio.echo_canceller`` speex), measured by
   benchmarks.loop's receiver, first with nothing beside it, then beside an install-like load at
   the priority the box gives RAUC (rauc.service's drop-in: nice 19, idle I/O class,
   SCHED_BATCH), then beside the same load at normal priority. One "install" = a real signed
   verity bundle of a root ext4 (devtools/bundles.py, release compression) read with
   ``rauc extract`` (signature, the payload's hash tree, squashfs decompression; the bundle's
   pages dropped from the cache first) and its image written over a scratch file (fdatasync
   every 64 MiB, fsync at the end), again and again for the whole window. The root is the
   image's (images/out/rootfs-*.ext4) when it exists, else a 256 MiB ext4 of this host's shared
   libraries made for the run.
2. ``run_update``, in QEMU virt (only with an A/B image and its U-Boot in images/out): v1 boots
   from the card (the cold-boot reference), a signed v2 bundle is served over HTTPS, and the
   host times, from the guest's console and Asterisk's log: serve -> installed (download, check,
   install), the reboot, and the reboot -> registered with Asterisk from slot B.

Owns only the measurement and its tables. Knows nothing of how the firmware installs (it reads
what the box prints and what Asterisk logs); the QEMU pieces are tests/image's, imported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools import bundles
from devtools.asterisk import ASTERISK_ROOT, Asterisk
from devtools.certificate import web_certificate
from devtools.paths import CACHE
from devtools.waiting import wait_for
from firmware.config import AudioSettings, MediaSettings

from . import loop
from .bundle import image_root

MIB = 1 << 20
SYNC_EVERY = 64 * MIB  # what the load writes between two fdatasync calls
FALLBACK_ROOT_MIB = 256
FALLBACK_CONTENT = 200 * MIB  # real files (this host's shared libraries) in the fallback root
FALLBACK_FILES = Path("/usr/lib") / f"{os.uname().machine}-linux-gnu"
# rauc.service's drop-in on the box (images/overlay/etc/systemd/system/rauc.service.d)
LOW_PRIORITY = ["ionice", "-c", "3", "nice", "-n", "19", "chrt", "--batch", "0"]
SCRATCH = Path(os.environ.get("TMPDIR", "/var/tmp"))
# a row with the slot written no faster than this: about an SD card's sequential write (assumed,
# not measured on a Pi); this host's disk takes an unpaced write far faster
PACED_MIB_S = 20.0


def _missing(*tools: str) -> str | None:
    for tool in tools:
        if shutil.which(tool) is None:
            return tool
    return None


# --------------------------------------------------------------------------- 1. install load
def load_available() -> str | None:
    """None when the install-load benchmark can run, else one line saying why not."""
    tool = _missing("rauc", "mksquashfs", "debugfs", "openssl", "mke2fs", "ionice", "chrt")
    return f"{tool} is not installed (./build.sh bundle installs what it needs)" if tool else None


def fallback_root(folder: Path) -> Path:
    """A 256 MiB ext4 holding up to 200 MiB of this host's shared libraries (hard links into a
    staging folder, so nothing is copied): real binaries compress like a root does."""
    stage = folder / "stage"
    stage.mkdir()
    total = 0
    for dirpath, dirs, files in os.walk(FALLBACK_FILES):
        dirs.sort()
        for name in sorted(files):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            size = path.stat().st_size
            if total + size > FALLBACK_CONTENT:
                continue
            dest = stage / path.relative_to(FALLBACK_FILES)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copyfile(path, dest)
            total += size
    root = folder / "root.ext4"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(stage), str(root),
                    f"{FALLBACK_ROOT_MIB}M"], check=True, capture_output=True)
    shutil.rmtree(stage)
    return root


def _note(progress: Path, **fields: Any) -> None:
    with open(progress, "a") as f:
        f.write(json.dumps({"t": time.monotonic(), **fields}) + "\n")


def install_once(bundle: Path, cert: Path, unpack: Path, slot: Path,
                 progress: Path, written: int, rate: float = 0.0) -> int:
    """One install-like pass: ``rauc extract`` of ``bundle`` into ``unpack`` (its pages
    dropped from the page cache first, so it is read from the disk), then the image written
    over ``slot`` like RAUC writes a slot, at ``rate`` MiB/s at most (0: as fast as the disk
    takes it). Returns ``written`` plus the bytes written."""
    fd = os.open(bundle, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    out = unpack / "extracted"
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(["rauc", "extract", f"--keyring={cert}", str(bundle), str(out)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"rauc extract failed: {done.stderr.strip()[-200:]}")
    _note(progress, event="extracted", written=written)
    images = [p for p in out.iterdir() if p.suffix == ".ext4"]
    if len(images) != 1:
        raise RuntimeError(f"the bundle holds {len(images)} ext4 images, not one")
    dst = os.open(slot, os.O_WRONLY | os.O_CREAT, 0o600)  # overwritten in place, like a device
    try:
        unsynced = done_here = 0
        began = time.monotonic()
        with open(images[0], "rb") as src:
            while chunk := src.read(MIB):
                os.write(dst, chunk)
                written += len(chunk)
                unsynced += len(chunk)
                done_here += len(chunk)
                if rate and (ahead := done_here / (rate * MIB) - (time.monotonic() - began)) > 0:
                    time.sleep(ahead)
                if unsynced >= SYNC_EVERY:
                    os.fdatasync(dst)
                    unsynced = 0
                    _note(progress, event="synced", written=written)
        os.fsync(dst)
    finally:
        os.close(dst)
        shutil.rmtree(out, ignore_errors=True)
    return written


def load_main(bundle: Path, cert: Path, unpack: Path, slot: Path, progress: Path,
              count: int = 0, rate: float = 0.0) -> None:
    """The load process (``python -m benchmarks.update load ...``): installs until killed
    (or ``count`` of them), writing at ``rate`` MiB/s at most, noting its scheduling and its
    progress in ``progress``."""
    _note(progress, event="start", policy=os.sched_getscheduler(0),
          nice=os.getpriority(os.PRIO_PROCESS, 0), io=_io_class(os.getpid()))
    written = installs = 0
    while not count or installs < count:
        written = install_once(bundle, cert, unpack, slot, progress, written, rate)
        installs += 1
        _note(progress, event="installed", written=written, installs=installs)


def in_window(notes: list[dict], start: float, end: float) -> dict[str, float]:
    """Bytes written and installs finished between ``start`` and ``end`` (monotonic s), from
    the load's notes; a note carries the totals at its time."""
    before = [n for n in notes if n["t"] <= start and "written" in n]
    during = [n for n in notes if start < n["t"] <= end and "written" in n]
    base = before[-1] if before else {"written": 0}
    last = during[-1] if during else base
    finished = [n for n in during if n["event"] == "installed"]
    return {"bytes": last["written"] - base["written"], "installs": len(finished),
            "seconds": end - start}


def _read_notes(progress: Path) -> list[dict]:
    if not progress.exists():
        return []
    return [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]


def _io_class(pid: int) -> str:
    done = subprocess.run(["ionice", "-p", str(pid)], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()


def _measure_beside(prefix: list[str], rate: float, bundle: Path, cert: Path, work: Path,
                    seconds: float, rt: int, aec: str) -> tuple[dict, dict]:
    """The loop measured while the load runs under ``prefix`` writing at ``rate`` MiB/s at
    most (0: unlimited); (loop row, load figures)."""
    progress = work / "progress.jsonl"
    progress.unlink(missing_ok=True)
    unpack = Path("/dev/shm") if Path("/dev/shm").is_dir() else work  # the slot is on disk
    unpack = Path(tempfile.mkdtemp(prefix="bench-unpack-", dir=unpack))
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "benchmarks.update", "load",
                             str(bundle), str(cert), str(unpack), str(work / "slot.img"),
                             str(progress), "0", str(rate)], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: any(n["event"] == "start" for n in _read_notes(progress))
                 or proc.poll() is not None, 60, 0.1, "the install load to start")
        if proc.poll() is not None:
            raise RuntimeError(f"the install load did not start: {proc.stderr.read()[-300:]}")
        start = time.monotonic()
        row = loop.measure("core", seconds, False, rt=rt, aec=aec)
        end = time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError(f"the install load stopped: {proc.stderr.read()[-300:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the load and its rauc
        proc.wait()
        shutil.rmtree(unpack, ignore_errors=True)
    notes = _read_notes(progress)
    first = next(n for n in notes if n["event"] == "start")
    load = {**in_window(notes, start, end), "policy": first["policy"], "nice": first["nice"],
            "io": first["io"]}
    durations = [b["t"] - a["t"] for a, b in zip(
        [n for n in notes if n["event"] in ("start", "installed")],
        [n for n in notes if n["event"] == "installed"], strict=False)]
    load["install_s"] = min(durations) if durations else None
    (work / "slot.img").unlink(missing_ok=True)
    return row, load


def run_install_load(seconds: float, root: Path | None = None) -> dict:
    media, audio = MediaSettings(), AudioSettings()
    rt, aec = media.realtime_priority, audio.echo_canceller
    with tempfile.TemporaryDirectory(prefix="bench-install-", dir=SCRATCH) as tmp:
        work = Path(tmp)
        if root is None:
            found = image_root()
            root = found if found.is_file() else fallback_root(work)
        key, cert = bundles.make_key_pair(work / "key", "intercom benchmark key")
        bundle = bundles.make_bundle(root, work / "b.raucb", "9.9.9", key, cert,
                                     squashfs_args=bundles.RELEASE_SQUASHFS)
        rows = []
        idle = loop.measure("core", seconds, False, rt=rt, aec=aec)
        rows.append({"what": "idle", **idle, "load": None})
        for what, prefix, rate in (
                ("during an install at the box's priority (nice 19, idle I/O, SCHED_BATCH)",
                 LOW_PRIORITY, 0.0),
                (f"the same, its writes paced at {PACED_MIB_S:.0f} MiB/s", LOW_PRIORITY,
                 PACED_MIB_S),
                ("the same install at normal priority", [], 0.0)):
            row, load = _measure_beside(prefix, rate, bundle, cert, work, seconds, rt, aec)
            rows.append({"what": what, **row, "load": load})
        return {"root": root, "root_bytes": root.stat().st_size,
                "root_used": root.stat().st_blocks * 512, "bundle_bytes": bundle.stat().st_size,
                "rt": rt, "aec": aec, "seconds": seconds, "rows": rows,
                "scheduler": _io_scheduler(work)}


def _io_scheduler(path: Path) -> str:
    """The I/O scheduler of the disk holding ``path`` (ionice's idle class needs BFQ)."""
    dev = os.stat(path).st_dev
    block = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    for candidate in (block, block.parent):
        sched = candidate.resolve() / "queue" / "scheduler"
        if sched.exists():
            found = re.search(r"\[([^\]]+)\]", sched.read_text())
            return found.group(1) if found else sched.read_text().strip()
    return "unknown"


def _load_text(load: dict | None) -> str:
    if load is None:
        return "nothing"
    rate = load["bytes"] / MIB / load["seconds"] if load["seconds"] else 0.0
    ended = f"{load['installs']} install{'' if load['installs'] == 1 else 's'} ended"
    return (f"{ended}, {load['bytes'] / MIB:.0f} MiB written "
            f"({rate:.0f} MiB/s)")


def install_load_table(result: dict) -> str:
    rows = result["rows"]
    ref = rows[0]["p99_us"]
    out = ["| 20 ms loop (the default: SCHED_FIFO "
           f"{result['rt']}, {result['aec']} echo canceller) | packets | p50 µs | p99 µs "
           "| max µs | p99 vs idle | beside it in the window |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ratio = r["p99_us"] / ref if ref else float("inf")
        out.append(f"| {r['what']} | {r['packets']} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
                   f"{r['max_us']:.0f} | {ratio:.2f}x | {_load_text(r['load'])} |")
    low = rows[1]["load"]
    policies = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_BATCH: "SCHED_BATCH",
                os.SCHED_IDLE: "SCHED_IDLE"}
    one = f"{low['install_s']:.1f} s" if low["install_s"] else "longer than the window"
    ran = " / ".join(sorted({re.sub(r" [0-9]+ frames", "", r["scheduling"]) for r in rows}))
    out += ["", f"Root: {result['root'].name}, {result['root_bytes'] / MIB:.0f} MiB ext4 "
            f"({result['root_used'] / MIB:.0f} MiB allocated); bundle "
            f"{result['bundle_bytes'] / MIB:.1f} MiB (`{bundles.RELEASE_SQUASHFS}`); "
            f"{result['seconds']:.0f} s per row. The loop ran {ran} in every row. "
            "The low-priority load ran "
            f"{policies.get(low['policy'], low['policy'])}, nice {low['nice']}, I/O "
            f"`{low['io']}` (this disk's I/O scheduler: {result['scheduler']}; only BFQ honours "
            f"the idle class); one install took {one} there.",
            "What this stands for: on the box RAUC reads the bundle through dm-verity and the "
            "kernel's squashfs and writes the other root slot's block device; here "
            "`rauc extract` does the verification and decompression in user space and the "
            "image is written over a file on this host's disk, for the whole window. The same "
            "install inside the QEMU guest would be timed by TCG, which says nothing of a Pi. "
            f"The paced row writes no faster than {PACED_MIB_S:.0f} MiB/s, about an SD card's "
            "sequential write (assumed, not measured on a Pi); unpaced, this host's disk took "
            f"{low['bytes'] / MIB / low['seconds']:.0f} MiB/s."]
    return "\n".join(out)


# --------------------------------------------------------------------------- 2. QEMU update
def signing_pair() -> tuple[Path, Path]:
    """The pair ``./build.sh`` signs bundles with (its image carries the certificate)."""
    return (Path(os.environ.get("INTERCOM_SIGNING_KEY") or CACHE / "keys" / "dev.key.pem"),
            Path(os.environ.get("INTERCOM_SIGNING_CERT") or CACHE / "keys" / "dev.cert.pem"))


def update_available() -> str | None:
    """None when the QEMU update benchmark can run, else one line saying why not."""
    from tests.image.qemu import built_image, uboot_qemu

    if built_image() is None:
        return "no image in images/out (./build.sh image makes it)"
    if not uboot_qemu().exists():
        return "images/out has no u-boot-qemu.bin: not an A/B image (./build.sh image)"
    if not all(p.is_file() for p in signing_pair()):
        return "no signing pair under $INTERCOM_CACHE/keys (./build.sh image makes it)"
    if not (ASTERISK_ROOT / "usr/sbin/asterisk").exists():
        return f"no Asterisk root at {ASTERISK_ROOT} (./build.sh test builds it)"
    if os.geteuid() != 0:
        return "needs root (a network namespace for QEMU and Asterisk)"
    tool = _missing("qemu-system-aarch64", "mcopy", "dtc", "debugfs", "rauc", "ip")
    return f"{tool} is not installed" if tool else None


def registrations(log: str, ext: str) -> int:
    """REGISTERs Asterisk accepted for ``ext`` (a new binding or a refreshed one)."""
    return len(re.findall(rf"(?:Added|Refreshed) contact '[^']*' (?:to|on) AOR '{ext}'", log))


def seen(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    """The monotonic time at which ``predicate`` was first seen true (polled every 0.25 s)."""
    wait_for(predicate, timeout, 0.25, what)
    return time.monotonic()


def run_update(keep: Path = Path("/var/tmp/bench-update-console.log")) -> dict:
    """v1 cold boot to registered, then v2 served, installed, rebooted into and registered;
    the guest's console is copied to ``keep`` when a step times out."""
    from tests.image.qemu import (
        Qemu,
        built_image,
        image_version,
        loopback_namespace,
        mtools,
        prepare_card,
        root_ext4,
        virt_args,
        virt_dtb,
    )
    from tests.image.test_boot import sip_config
    from tests.image.test_update import (
        MAC,
        PORT,
        VIRT,
        boots,
        bump,
        https_server,
        serve,
        update_last,
    )

    src = built_image()
    assert src is not None
    v1 = image_version(src)
    v2 = bump(v1, 1)
    key, cert = signing_pair()
    with tempfile.TemporaryDirectory(prefix="bench-update-", dir=SCRATCH) as tmpname:
        tmp = Path(tmpname)
        www = tmp / "www"
        (www / "update").mkdir(parents=True)
        started = time.perf_counter()
        bundle = bundles.make_bundle(root_ext4(src), tmp / "v2.raucb", v2, key, cert,
                                     squashfs_args=bundles.RELEASE_SQUASHFS)
        built = time.perf_counter() - started
        with loopback_namespace() as ns, https_server(ns, www, tmp):
            pbx = Asterisk(netns=ns, media_address="10.0.2.2")
            pbx.start()
            console = tmp / "console.log"
            vm = None
            try:
                ca = web_certificate(["10.0.2.2"], folder=tmp / "pki").ca
                config = {
                    "sip": sip_config(pbx),
                    "update": {"url": f"https://10.0.2.2:{PORT}/update/intercom.raucb",
                               "ca_file": "/boot/firmware/site-ca.pem", "interval": 60},
                    "audio": {"capture": "silence", "playback": "null"},
                    # QEMU's PL061 idles low: an active-high call button, no others
                    "gpio": {"buttons": {"call": {"pin": 17, "active_high": True,
                                                  "pull_up": False},
                                         "hangup": None, "talk": None, "answer": None}},
                }
                img = prepare_card(src, tmp, config)
                mtools(img, "mcopy", "-o", str(ca), "::site-ca.pem")
                dtb = virt_dtb(tmp, VIRT)
                vm = Qemu(virt_args(img, console, dtb=dtb, mac=MAC, machine=VIRT), console,
                          ns).start()

                def regs() -> int:
                    return registrations(pbx.log_text(), "5002")

                t_registered = seen(lambda: regs() >= 1 or not vm.alive(), 900,
                                    "v1 to register after a cold boot")
                if not vm.alive():
                    raise RuntimeError("QEMU stopped during the cold boot")
                cold = t_registered - vm.started
                first = wait_for(lambda: boots(vm) and boots(vm)[-1], 120, 1, "v1's boot report")
                if (first.get("slot"), first.get("version")) != ("A", v1):
                    raise RuntimeError(f"the cold boot was not v1 from slot A: {first}")

                t_serve = time.monotonic()
                serve(www / "update", "intercom.raucb", bundle)
                size = bundle.stat().st_size
                t_downloaded = seen(lambda: f"downloaded {size} bytes" in vm.console(), 300,
                                    "the box to download v2")

                def refused() -> dict:
                    last = update_last(vm)
                    return last if last.get("version") == v2 and last.get("result") in (
                        "refused", "failed") else {}

                t_installing = seen(lambda: f"installing {v2} into slot" in vm.console()
                                    or refused(), 300, "the install of v2 to start")
                if refused():
                    raise RuntimeError(f"the box did not install v2: {refused()}")
                t_installed = seen(lambda: f"{v2} installed in slot" in vm.console(), 1800,
                                   "the install of v2 to finish")
                status = wait_for(lambda: update_last(vm).get("result") == "installed"
                                  and vm.last("STATUS"), 120, 0.5, "status: installed")
                guest = status["update"]["last"]["at"] - status["update"]["checked_at"]
                t_rebooting = seen(lambda: "rebooting into slot" in vm.console(), 600,
                                   "the box to reboot into v2")
                uboots = vm.console().count("U-Boot 20")
                t_reset = seen(lambda: vm.console().count("U-Boot 20") > uboots, 600,
                               "the machine to reset")
                before = regs()  # v1 is gone: whatever registers now is the new boot
                t_back = seen(lambda: regs() > before, 900, "v2 to register after the reboot")
                wait_for(lambda: len(boots(vm)) >= 2, 120, 1, "v2's boot report")
                second = boots(vm)[-1]
                if (second.get("slot"), second.get("version")) != ("B", v2):
                    raise RuntimeError(f"the reboot did not start v2 from slot B: {second}")
            except Exception:
                if console.exists():
                    shutil.copyfile(console, keep)
                raise
            finally:
                if vm is not None:
                    vm.power_off()
                pbx.cleanup()
        return {"v1": v1, "v2": v2, "bundle_bytes": bundle.stat().st_size, "built_s": built,
                "cold_s": cold, "serve_to_installed_s": t_installed - t_serve,
                "check_to_installed_s": guest,
                "download_s": guest - (t_installed - t_downloaded),
                "verify_s": t_installing - t_downloaded,
                "install_s": t_installed - t_installing,
                "installed_to_reboot_s": t_rebooting - t_installed,
                "reboot_to_registered_s": t_back - t_rebooting,
                "reset_to_registered_s": t_back - t_reset}


def update_table(r: dict) -> str:
    ratio = r["reset_to_registered_s"] / r["cold_s"]
    rows = [
        ("bundle served (v2, release compression)", f"{r['bundle_bytes'] / MIB:.1f} MiB", ""),
        ("serve -> `status.update.last.result` installed (the box's next check is "
         "up to `update.interval` 60 s away)", f"{r['serve_to_installed_s']:.0f} s", ""),
        ("the box's check -> installed (guest clock: download + check + install)",
         f"{r['check_to_installed_s']:.0f} s", ""),
        ("&nbsp;&nbsp;download (HTTPS, pinned CA)", f"{r['download_s']:.0f} s", ""),
        ("&nbsp;&nbsp;check (signature, version, payload)", f"{r['verify_s']:.0f} s", ""),
        ("&nbsp;&nbsp;`rauc install` into slot B (nice 19)", f"{r['install_s']:.0f} s", ""),
        ("installed -> the updater reboots (idle and registered)",
         f"{r['installed_to_reboot_s']:.0f} s", ""),
        ("reboot -> registered in Asterisk from slot B (shutdown included)",
         f"{r['reboot_to_registered_s']:.0f} s", ""),
        ("machine reset (U-Boot) -> registered, after the update",
         f"{r['reset_to_registered_s']:.0f} s", f"{ratio:.2f}x"),
        (f"reference: cold boot of v1 ({r['v1']}, the card's first), QEMU start -> "
         "registered",
         f"{r['cold_s']:.0f} s", "1.00x"),
    ]
    out = ["| step (QEMU virt, TCG, 2 vCPUs) | figure | vs cold boot |", "|---|---:|---:|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    out += ["", "Times are the host's, from the guest's console lines and Asterisk's log "
            "(polled every 0.25 s) and the guest's own clock for the check -> installed span; "
            "TCG makes every guest figure slower than a Pi, so read the ratio."]
    return "\n".join(out)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["load"] and len(args) in (6, 7, 8):
        load_main(*(Path(a) for a in args[1:6]), count=int(args[6]) if len(args) > 6 else 0,
                  rate=float(args[7]) if len(args) > 7 else 0.0)
        return
    print("usage: python -m benchmarks.update load BUNDLE CERT UNPACK SLOT PROGRESS [COUNT "
          "[MiB/s]] "
          "(the load process; `python -m benchmarks --only install_load|update` runs the "
          "benchmarks)", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
