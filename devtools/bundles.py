"""The one maker of RAUC update bundles, for ``./build.sh bundle``, the tests and the benchmarks.

Owns: signing key pairs for tests (openssl), the bundle's manifest, writing files into a sparse
copy of a root ext4 (``debugfs -w``: no mount, no loop device, no root needed), running the
host's ``rauc bundle`` (format=verity), and the broken bundles a box must refuse: tampered
(one payload byte flipped: the signature still verifies, the verity data does not),
truncated, and unsigned (the manifest in a CMS envelope with no signer: RAUC itself cannot make
one).

Bundle layout (verity format, read from RAUC's docs and seen with rauc 1.8 here): the squashfs
payload, its dm-verity hash tree, the CMS signature (DER; the manifest is its content), then the
signature's size as 8 bytes big-endian.

Knows nothing of the firmware or of how a box installs or refuses a bundle
(firmware/update does that); uses only rauc, mksquashfs (through rauc), debugfs, openssl, cp.

Command line (what build.sh runs)::

    python -m devtools.bundles make ROOT.ext4 OUT.raucb --version V --key K --cert C
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

COMPATIBLE = "intercom-rpi-arm64"
SLOT_CLASS = "rootfs"  # [slot.rootfs.N] in the box's /etc/rauc/system.conf
VERSION_FILE = "/etc/intercom-version"
# mksquashfs compression: zstd for release bundles (the box's kernel has SQUASHFS_ZSTD; fast to
# decompress on a Pi) in 1 MiB blocks (RAUC reads the image once, in order): as small as level 15
# in 128 KiB blocks, five times faster to build; lz4 where build and unpack speed matter more
# than size (tests, QEMU). Measured in benchmarks/bundle.py.
RELEASE_SQUASHFS = "-comp zstd -Xcompression-level 9 -b 1M"
FAST_SQUASHFS = "-comp lz4"
_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+@/-]+")


class BundleError(Exception):
    """A bundle could not be made or read; the message is one line naming what failed."""


def _run(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise BundleError(f"{Path(str(args[0])).name} failed ({done.returncode}): {last[0]}")
    return done


def check_version(version: str) -> str:
    """``version`` if it is MAJOR.MINOR.PATCH with an optional ``-suffix``, else BundleError."""
    if not _VERSION.fullmatch(version):
        raise BundleError(f"version {version!r} is not MAJOR.MINOR.PATCH[-suffix]")
    return version


def make_key_pair(folder: Path, cn: str, days: int = 3650) -> tuple[Path, Path]:
    """A new signing key (``key.pem``, mode 0600) and its self-signed certificate
    (``cert.pem``, CN ``cn``) in ``folder``; returns (key, cert)."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / "key.pem", folder / "cert.pem"
    old = os.umask(0o077)
    try:
        _run("openssl", "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-sha256",
             "-days", str(days), "-subj", f"/CN={cn}", "-keyout", key, "-out", cert)
    finally:
        os.umask(old)
    key.chmod(0o600)
    cert.chmod(0o644)
    return key, cert


def _debugfs(image: Path, *commands: str, write: bool = False) -> str:
    args = ["debugfs"] + (["-w"] if write else [])
    if len(commands) == 1:
        args += ["-R", commands[0], str(image)]
        return _run(*args).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as script:
        script.write("\n".join(commands) + "\n")
        script.flush()
        return _run(*args, "-f", script.name, str(image)).stdout


def read_file(image: Path, path: str) -> bytes | None:
    """The bytes of ``path`` inside the ext4 ``image``, or None when it is not a regular file."""
    mode = _mode(image, path)
    if mode is None or not mode[0]:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        _debugfs(image, f"dump {path} {out}")
        return out.read_bytes() if out.exists() else None


def _mode(image: Path, path: str) -> tuple[bool, int] | None:
    """(is a regular file, permission bits) of ``path`` in ``image``; None when absent."""
    done = subprocess.run(["debugfs", "-R", f"stat {path}", str(image)],
                          capture_output=True, text=True)
    found = re.search(r"Type: (\S+)\s+Mode:\s+([0-7]+)", done.stdout)
    if not found:
        return None
    return found.group(1) == "regular", int(found.group(2), 8) & 0o7777


def write_files(image: Path, files: Mapping[str, bytes | str]) -> None:
    """Writes each absolute ``path -> content`` into the ext4 ``image`` in place, owned by
    root; an existing regular file keeps its permissions, a new one gets 0755 when it starts
    with ``#!`` or is an ELF binary, else 0644. Missing parent folders are created (0755).
    Every file is read back; any difference is a BundleError."""
    commands: list[str] = []
    made: set[Path] = set()
    with tempfile.TemporaryDirectory() as tmp:
        for n, (path, content) in enumerate(files.items()):
            if not _SAFE_PATH.fullmatch(path) or "/../" in path + "/":
                raise BundleError(f"files: {path!r} is not a plain absolute path")
            data = content.encode() if isinstance(content, str) else bytes(content)
            local = Path(tmp) / f"f{n}"
            local.write_bytes(data)
            old = _mode(image, path)
            if old is not None and old[0]:
                perm = old[1]
            else:
                perm = 0o755 if data[:2] == b"#!" or data[:4] == b"\x7fELF" else 0o644
            parents = Path(path).parents
            for parent in reversed(list(parents)[:-1]):
                if parent not in made and _mode(image, str(parent)) is None:
                    made.add(parent)
                    commands += [f"mkdir {parent}", f"sif {parent} mode 040755",
                                 f"sif {parent} uid 0", f"sif {parent} gid 0"]
            if old is not None:
                commands.append(f"rm {path}")
            commands += [f"write {local} {path}", f"sif {path} mode 0{0o100000 | perm:o}",
                         f"sif {path} uid 0", f"sif {path} gid 0"]
        _debugfs(image, *commands, write=True)
    for path, content in files.items():
        want = content.encode() if isinstance(content, str) else bytes(content)
        if read_file(image, path) != want:
            raise BundleError(f"files: {path} could not be written into {image.name} "
                              "(full, or a parent is not a folder?)")


def manifest_text(version: str, compatible: str = COMPATIBLE, image: str = "rootfs.ext4",
                  fmt: str = "verity") -> str:
    """The bundle's manifest.raucm: one image for the ``rootfs`` slot class, verity format
    (``fmt="plain"`` only for host tests that install: this host has no device-mapper)."""
    return (f"[update]\ncompatible={compatible}\nversion={check_version(version)}\n"
            f"description=intercom {version}\n\n"
            f"[bundle]\nformat={fmt}\n\n"
            f"[image.{SLOT_CLASS}]\nfilename={image}\n")


def make_bundle(root_ext4: Path, out: Path, version: str, key: Path | str, cert: Path | str,
                compatible: str = COMPATIBLE, files: Mapping[str, bytes | str] | None = None,
                squashfs_args: str = FAST_SQUASHFS, fmt: str = "verity") -> Path:
    """Signs ``root_ext4`` as a RAUC bundle at ``out`` (replaced if present).

    The root is copied sparse; its ``/etc/intercom-version`` is set to ``version`` (the
    contract: a bundle's manifest version is the version of its root) and ``files`` (absolute
    path -> bytes or text) are written into the copy, so ``root_ext4`` is never changed.
    ``key`` may be a PKCS#11 URL (rauc passes it to OpenSSL). Returns ``out``."""
    check_version(version)
    if not root_ext4.is_file():
        raise BundleError(f"root image {root_ext4} does not exist")
    for what in (key, cert):
        if not str(what).startswith("pkcs11:") and not Path(what).is_file():
            raise BundleError(f"signing key or certificate {what} does not exist")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent))
    try:
        content = work / "content"
        content.mkdir()
        image = content / "rootfs.ext4"
        _run("cp", "--sparse=always", root_ext4, image)
        write_files(image, {VERSION_FILE: f"{version}\n", **(files or {})})
        (content / "manifest.raucm").write_text(manifest_text(version, compatible, fmt=fmt))
        made = work / "bundle.raucb"
        _run("rauc", "bundle", f"--cert={cert}", f"--key={key}",
             f"--mksquashfs-args={squashfs_args}", content, made)
        os.replace(made, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


class Layout:
    """Where the parts of a verity bundle are: payload [0, payload), the signature after it."""

    def __init__(self, bundle: Path) -> None:
        self.size = bundle.stat().st_size
        if self.size < 8:
            raise BundleError(f"{bundle.name}: {self.size} bytes is no bundle")
        with bundle.open("rb") as f:
            f.seek(self.size - 8)
            (sig_size,) = struct.unpack(">Q", f.read(8))
            if not 0 < sig_size <= self.size - 8:
                raise BundleError(f"{bundle.name}: no signature at its end")
            self.payload = self.size - 8 - sig_size
            f.seek(self.payload)
            self.signature = f.read(sig_size)
        self.manifest = _cms_content(self.signature).decode()
        found = re.search(r"^verity-size=([0-9]+)$", self.manifest, re.M)
        if not found:
            raise BundleError(f"{bundle.name}: the manifest has no verity-size (not verity?)")
        self.verity_size = int(found.group(1))
        self.data = self.payload - self.verity_size  # the squashfs, before its hash tree


def tamper(bundle: Path, out: Path, offset: int | None = None) -> Path:
    """A copy of ``bundle`` with one byte of the squashfs flipped (the middle one unless
    ``offset`` is given): the manifest and its signature are untouched, so ``rauc info`` still
    verifies; reading the payload through its verity hash tree fails."""
    layout = Layout(bundle)
    at = layout.data // 2 if offset is None else offset
    if not 0 <= at < layout.data:
        raise BundleError(f"tamper: offset {at} is outside the payload (0..{layout.data})")
    shutil.copyfile(bundle, out)
    with out.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    return out


def truncate(bundle: Path, out: Path, keep: int | None = None) -> Path:
    """The first ``keep`` bytes of ``bundle`` (half by default): a download cut short."""
    size = bundle.stat().st_size
    keep = size // 2 if keep is None else keep
    if not 0 <= keep < size:
        raise BundleError(f"truncate: keep {keep} of {size} bytes")
    with bundle.open("rb") as src, out.open("wb") as dst:
        dst.write(src.read(keep))
    return out


def unsigned(bundle: Path, out: Path, envelope: bool = True) -> Path:
    """``bundle`` without a signature. ``envelope=True``: the same payload and manifest in a
    CMS SignedData with no signer (what a bundle looks like whose signing step was skipped;
    ``rauc info --no-verify`` reads it, verification says "no signers"). ``envelope=False``:
    the payload alone (a bare squashfs and hash tree; RAUC finds no signature size)."""
    layout = Layout(bundle)
    with bundle.open("rb") as src, out.open("wb") as dst:
        dst.write(src.read(layout.payload))
        if envelope:
            cms = _unsigned_cms(layout.manifest.encode())
            dst.write(cms + struct.pack(">Q", len(cms)))
    return out


def info(bundle: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with bundle.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return bundle.stat().st_size, digest.hexdigest()


# --- DER, just enough for a CMS SignedData's content ---------------------------------------

_OID_DATA = bytes.fromhex("06092a864886f70d010701")
_OID_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _der_items(blob: bytes) -> list[tuple[int, bytes]]:
    """The (tag, body) items of a DER sequence body; BundleError on BER or a short blob."""
    items, i = [], 0
    while i < len(blob):
        if i + 2 > len(blob):
            raise BundleError("signature: DER item cut short")
        tag, first = blob[i], blob[i + 1]
        i += 2
        if first == 0x80:
            raise BundleError("signature: indefinite-length (BER) encoding is not read here")
        if first & 0x80:
            width = first & 0x7F
            n = int.from_bytes(blob[i:i + width], "big")
            i += width
        else:
            n = first
        if i + n > len(blob):
            raise BundleError("signature: DER item longer than the signature")
        items.append((tag, blob[i:i + n]))
        i += n
    return items


def _cms_content(cms: bytes) -> bytes:
    """The encapsulated content (RAUC's manifest) of a DER CMS SignedData."""
    try:
        (tag, info_body), = _der_items(cms)
        oid, (_, explicit) = _der_items(info_body)
        (_, signed), = _der_items(explicit)
        fields = _der_items(signed)
        _, encap = fields[2]
        _, (_, wrapped) = _der_items(encap)
        (_, content), = _der_items(wrapped)
    except (ValueError, IndexError) as exc:
        raise BundleError(f"signature: not a CMS SignedData with content ({exc})") from None
    if tag != 0x30 or oid != (0x06, _OID_SIGNED_DATA[2:]):
        raise BundleError("signature: not a CMS SignedData")
    return content


def _unsigned_cms(content: bytes) -> bytes:
    """A CMS SignedData carrying ``content`` with no digest algorithm and no signer."""
    signed = _der(0x30, _der(0x02, b"\x01") + _der(0x31, b"")
                  + _der(0x30, _OID_DATA + _der(0xA0, _der(0x04, content)))
                  + _der(0x31, b""))
    return _der(0x30, _OID_SIGNED_DATA + _der(0xA0, signed))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.bundles")
    sub = p.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="sign a root ext4 as a RAUC bundle")
    mk.add_argument("root", type=Path)
    mk.add_argument("out", type=Path)
    mk.add_argument("--version", required=True)
    mk.add_argument("--key", required=True)
    mk.add_argument("--cert", required=True)
    mk.add_argument("--compatible", default=COMPATIBLE)
    mk.add_argument("--squashfs-args", default=RELEASE_SQUASHFS)
    args = p.parse_args(argv)
    try:
        make_bundle(args.root, args.out, args.version, args.key, args.cert,
                    compatible=args.compatible, squashfs_args=args.squashfs_args)
    except BundleError as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 1
    size, sha = info(args.out)
    print(f"{args.out}: {size} bytes ({size / 2**20:.1f} MiB), sha256 {sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
