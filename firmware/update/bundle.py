"""Is this bundle one the box may install? Checked before RAUC is asked to install it.

Owns the refusals, each one line and a reason code for ``status``: ``unsigned``, ``signed by
another key``, ``certificate time`` (the box's clock is outside the certificate's validity),
``tampered``, ``for another device``, ``older than installed``, ``already installed`` and
``refused before`` (a version that failed its trial here). The signature and the manifest come
from the real ``rauc info --keyring`` (its error text mapped, RAUC 1.8 and 1.13 alike: both say
"signature verification failed: ...", "Invalid bundle format: ...", "Compatible mismatch",
"Version mismatch"); the payload is read once through its dm-verity hash tree, recomputed here
against the signed root hash, because ``rauc info`` checks the signature only and a tampered
payload would otherwise be found in the middle of the install. Also semantic-version order.

Knows nothing about downloads, slots, the state file or the intercom.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .state import UpdateError, one_line

COMPATIBLE = "intercom-rpi-arm64"
SLOT_CLASS = "rootfs"
BLOCK = 4096
RAUC_TIMEOUT = 300.0  # s; rauc info reads the signature only, this is for a wedged process

UNSIGNED = "unsigned"
OTHER_KEY = "signed by another key"
CERT_TIME = "certificate time"
TAMPERED = "tampered"
OTHER_DEVICE = "for another device"
OLDER = "older than installed"
SAME = "already installed"
REFUSED_BEFORE = "refused before"
REASONS = (UNSIGNED, OTHER_KEY, CERT_TIME, TAMPERED, OTHER_DEVICE, OLDER, SAME, REFUSED_BEFORE)


@dataclass(frozen=True)
class Bundle:
    """What a verified signature says about a bundle file."""

    path: Path
    compatible: str
    version: str
    format: str
    images: tuple[str, ...]
    verity_salt: str
    verity_hash: str
    verity_size: int


# ----------------------------------------------------------------------------- versions
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?")


def parse_version(text: str) -> tuple[tuple[int, int, int], tuple[str, ...] | None] | None:
    """MAJOR.MINOR.PATCH[-pre][+build] -> (core, pre-release fields or None); None if not."""
    m = _SEMVER.fullmatch(text.strip())
    if not m:
        return None
    pre = tuple(m[4].split(".")) if m[4] else None
    return (int(m[1]), int(m[2]), int(m[3])), pre


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, equal to or newer than ``b`` (semver precedence:
    a pre-release is older than its release; build metadata is ignored). ValueError if either
    is not a version."""
    pa, pb = parse_version(a), parse_version(b)
    if pa is None or pb is None:
        raise ValueError(f"not a version: {a if pa is None else b!r}")
    if pa[0] != pb[0]:
        return -1 if pa[0] < pb[0] else 1
    if pa[1] == pb[1]:
        return 0
    if pa[1] is None or pb[1] is None:
        return 1 if pa[1] is None else -1
    for x, y in zip(pa[1], pb[1], strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1  # numeric identifiers sort first
        return -1 if x < y else 1
    return (len(pa[1]) > len(pb[1])) - (len(pa[1]) < len(pb[1]))


# ----------------------------------------------------------------------------- RAUC's words
_TIME = ("certificate is not yet valid", "certificate has expired")
_CHAIN = "verify error"  # OpenSSL's CMS "Verify error: <X509 reason>": the chain, not the data


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.lstrip().startswith(("rauc-Message", "(rauc:"))]


def classify(stderr: str, stdout: str = "") -> tuple[str, str, str]:
    """RAUC's error output (``rauc info`` or ``rauc install``) -> (result, reason, message).
    The message is RAUC's own error line: the install client's ``LastError:``, else the last
    line on stderr (OpenSSL's queue, which RAUC may dump on stdout, is only matched)."""
    last_error = [ln[len("LastError:"):].strip() for ln in _lines(stdout + "\n" + stderr)
                  if ln.startswith("LastError:")]
    errors = _lines(stderr) or _lines(stdout)
    error = last_error[-1] if last_error else (errors[-1] if errors else "no output")
    low = (stderr + "\n" + stdout).lower()
    detail = one_line(error, 200)
    if "failed to load ca file" in low or "no keyring" in low:
        return "failed", "keyring", f"cannot check signatures: the keyring cannot be read " \
                                    f"({detail})"
    if "signature verification failed" in low:
        if any(t in low for t in _TIME):
            return "refused", CERT_TIME, f"its signing certificate is not valid at this box's " \
                                         f"time (clock not set?): {detail}"
        if _CHAIN in low:
            return "refused", OTHER_KEY, f"signed by another key: {detail}"
        if "no signers" in low:  # a CMS envelope whose signing step was skipped
            return "refused", UNSIGNED, f"not signed: {detail}"
        return "refused", TAMPERED, f"its signature does not match its content: {detail}"
    if "signature size is 0" in low or "no signers" in low:
        return "refused", UNSIGNED, f"not signed (RAUC finds no signature): {detail}"
    if "invalid bundle format" in low or "no valid cms" in low or "parse signature" in low:
        return "refused", TAMPERED, f"damaged, cut short or not a bundle: {detail}"
    if "payload is corrupted" in low or "verification of data area failed" in low:
        return "refused", TAMPERED, f"its content does not match its signature: {detail}"
    if "pre-install handler error" in low:  # the second lock: a call began meanwhile
        return "failed", "busy", detail
    if "compatible mismatch" in low:
        return "refused", OTHER_DEVICE, detail
    if "version mismatch" in low:
        return "refused", OLDER, f"{detail} (intercom update --force installs it)"
    return "failed", "rauc", detail


# ----------------------------------------------------------------------------- rauc info
def _rauc(args: list[str], rauc: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([rauc, *args], capture_output=True, text=True,
                              errors="replace", timeout=RAUC_TIMEOUT,
                              env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError:
        raise UpdateError("rauc", f"cannot check the bundle: {rauc} is not installed",
                      "failed") from None
    except subprocess.TimeoutExpired:
        raise UpdateError("rauc", f"rauc info did not answer within {RAUC_TIMEOUT:g} s",
                      "failed") from None


def _quoted(text: str, label: str) -> str | None:
    m = re.search(rf"^\s*{label}:\s*'(.*)'\s*$", text, re.M)
    return m[1] if m else None


def inspect(path: Path, keyring: str, conf: str | None = None, rauc: str = "rauc") -> Bundle:
    """``rauc info`` with the box's keyring: the signature verified, the manifest read.
    UpdateError (unsigned, another key, tampered, ...) when RAUC says no."""
    if not os.access(keyring, os.R_OK):
        raise UpdateError("keyring", f"cannot check signatures: the keyring {keyring} cannot be "
                                 "read", "failed")
    try:
        if not path.is_file():
            raise UpdateError("no file", f"{path} is not a file", "failed")
    except OSError as exc:
        raise UpdateError("no file", f"cannot read {path}: {exc.strerror or exc}",
                          "failed") from None
    base = ["info", f"--keyring={keyring}"] + ([f"--conf={conf}"] if conf else [])
    done = _rauc([*base, "--output-format=json", str(path)], rauc)
    if done.returncode != 0:
        result, reason, message = classify(done.stderr, done.stdout)
        raise UpdateError(reason, message, result)
    doc = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")), "")
    try:
        manifest = json.loads(doc)
    except ValueError:
        raise UpdateError("rauc", "rauc info printed no manifest", "failed") from None
    readable = _rauc([*base, str(path)], rauc)  # the verity parameters are only printed here
    if readable.returncode != 0:
        result, reason, message = classify(readable.stderr, readable.stdout)
        raise UpdateError(reason, message, result)
    fmt = re.search(r"^Bundle Format:\s*(\S+)", readable.stdout, re.M)
    size = re.search(r"^\s*Verity Size:\s*(\d+)", readable.stdout, re.M)
    images = tuple(str(k) for item in manifest.get("images") or [] if isinstance(item, dict)
                   for k in item)
    return Bundle(path=path, compatible=str(manifest.get("compatible") or ""),
                  version=str(manifest.get("version") or ""),
                  format=fmt[1] if fmt else "",
                  images=images,
                  verity_salt=_quoted(readable.stdout, "Verity Salt") or "",
                  verity_hash=_quoted(readable.stdout, "Verity Hash") or "",
                  verity_size=int(size[1]) if size else 0)


# ----------------------------------------------------------------------------- the rules
def judge(bundle: Bundle, installed: str, refused_versions: list[str], force: bool = False,
          compatible: str = COMPATIBLE) -> None:
    """The manifest against this box: UpdateError for another device, an older or the same
    version (unless ``force``), or a version that failed its trial here (unless ``force``)."""
    v = bundle.version
    if bundle.compatible != compatible:
        raise UpdateError(OTHER_DEVICE, f"for another device: the bundle is for "
                      f"{bundle.compatible!r}, this box is {compatible!r}", version=v)
    if bundle.format != "verity":
        raise UpdateError(OTHER_DEVICE, f"for another device: a {bundle.format or 'unknown'!r} "
                      "format bundle (this box installs 'verity' bundles only)", version=v)
    if SLOT_CLASS not in bundle.images:
        raise UpdateError(OTHER_DEVICE, f"for another device: no image for the {SLOT_CLASS!r} "
                      "slots", version=v)
    if parse_version(v) is None:
        raise UpdateError(OTHER_DEVICE, f"for another device: version {v!r} is not "
                      "MAJOR.MINOR.PATCH[-suffix]", version=v)
    if force:
        return
    if v in refused_versions:
        raise UpdateError(REFUSED_BEFORE, f"refused before: {v} failed its trial on this box "
                      "(a newer version will be installed)", version=v)
    if parse_version(installed) is None:
        return  # not known (not an A/B image): RAUC's min-bundle-version still applies
    order = compare_versions(v, installed)
    if order < 0:
        raise UpdateError(OLDER, f"older than installed: {v} < {installed} "
                      "(intercom update --force installs it)", version=v)
    if order == 0:
        raise UpdateError(SAME, f"already installed: {v}", version=v)


# ----------------------------------------------------------------------------- the payload
def _signature_size(f: BinaryIO, size: int) -> int:
    """RAUC's last 8 bytes: the CMS signature's size, big-endian."""
    f.seek(size - 8)
    (n,) = struct.unpack(">Q", f.read(8))
    return int(n)


def _digests(blocks: bytes, salt: bytes) -> bytes:
    """dm-verity (format 1, sha256): each 4 KiB block hashed after the salt."""
    out = bytearray()
    seed = hashlib.sha256(salt)
    for i in range(0, len(blocks), BLOCK):
        h = seed.copy()
        h.update(blocks[i:i + BLOCK])
        out += h.digest()
    return bytes(out)


def _pack(digests: bytes) -> bytes:
    """Digests, 128 to a 4 KiB hash block, the last block padded with zeros."""
    if len(digests) % BLOCK:
        digests += bytes(BLOCK - len(digests) % BLOCK)
    return digests


def verify_payload(bundle: Bundle, chunk: int = 1 << 20) -> None:
    """Recompute the bundle's dm-verity tree over its squashfs and compare it with the tree in
    the file and with the signed root hash. UpdateError (tampered) on any difference."""
    try:
        salt, root = bytes.fromhex(bundle.verity_salt), bytes.fromhex(bundle.verity_hash)
    except ValueError:
        raise UpdateError(TAMPERED, "the manifest has no usable verity salt/hash") from None
    if len(salt) != 32 or len(root) != 32 or bundle.verity_size <= 0 \
            or bundle.verity_size % BLOCK:
        raise UpdateError(TAMPERED, "the manifest has no usable verity parameters")
    try:
        with bundle.path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            payload = size - 8 - _signature_size(f, size) if size >= 8 else 0
            data = payload - bundle.verity_size
            if data <= 0 or payload % BLOCK:
                raise UpdateError(TAMPERED, "its size does not match its manifest "
                              "(cut short or padded)", version=bundle.version)
            os.posix_fadvise(f.fileno(), 0, payload, os.POSIX_FADV_SEQUENTIAL)
            f.seek(0)
            level = bytearray()
            left = data
            while left:
                piece = f.read(min(chunk, left))
                if not piece:
                    raise UpdateError(TAMPERED, "the file ended early", version=bundle.version)
                left -= len(piece)
                level += _digests(piece, salt)
            stored = f.read(bundle.verity_size)
    except OSError as exc:
        raise UpdateError("read", f"cannot read the bundle: {exc.strerror or exc}",
                      "failed", bundle.version) from None
    # the tree: level 0 hashes the data, each next level the one below, until one block;
    # RAUC stores the top level first and level 0 last, right after the data
    levels: list[bytes] = []
    blocks = data // BLOCK
    while blocks > 1:
        packed = _pack(bytes(level))
        levels.append(packed)
        blocks = len(packed) // BLOCK
        if blocks > 1:
            level = bytearray(_digests(packed, salt))
    top = levels[-1] if levels else None
    computed_root = _digests(top, salt) if top is not None else bytes(level)
    if b"".join(reversed(levels)) != stored:
        raise UpdateError(TAMPERED, "tampered: its content does not match its hash tree",
                      version=bundle.version)
    if computed_root != root:
        raise UpdateError(TAMPERED, "tampered: its content does not match the signed root hash",
                      version=bundle.version)


def check(path: Path, keyring: str, installed: str, refused_versions: list[str],
          force: bool = False, conf: str | None = None, rauc: str = "rauc") -> Bundle:
    """Everything before an install: signature, manifest rules, then the whole payload."""
    bundle = inspect(path, keyring, conf, rauc)
    judge(bundle, installed, refused_versions, force)
    verify_payload(bundle)
    return bundle
