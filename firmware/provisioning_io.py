"""Provisioning's I/O: the HTTPS fetch, the detached signature, this box's MAC, the URL that
DHCP handed out, and the last good document on disk.

Owns the one GET of ``provisioning.url`` (HTTPS only, the certificate checked against the pinned
CA and the URL's host name, no redirect followed, a size cap and one deadline for the whole
exchange, every failure one line), the signature check with the ``openssl`` command (``dgst
-sha256`` with the public key of ``provisioning.signing_cert``; ``sign`` makes such a signature
for ``intercom-fleet --sign``), the MAC of the interface that routes to the server (from
/proc/net/route and /sys/class/net), DHCP option 43 as systemd-networkd saves it in its lease
files, whether the data partition's folder can hold the cache, and the cache file (a checksum
line and the signature ahead of the document; written atomically, mode 0600, in a folder of mode
0700; a damaged one is refused whole). Blocking calls: the caller runs them in a thread. Knows
nothing about what a document means (``firmware.provisioning``) or about the intercom.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from . import __version__
from .config import normalise_mac

ROUTES = Path("/proc/net/route")
NET = Path("/sys/class/net")
DATA = Path("/data/intercom")  # the data partition's folder of the intercom user (images/)
MAX_SIGNATURE = 8192  # bytes: an RSA-8192 signature is 1024
MAX_LEASE = 65536  # bytes of one lease file read
OPENSSL_TIMEOUT = 20.0  # s for one openssl run (a Zero 2 W under load: well below a second)


class FetchError(Exception):
    """The document could not be fetched; the message says why in one line."""


class SignatureError(Exception):
    """The signature is missing, malformed or made by another key; one line says which."""


class CacheError(Exception):
    """The cache file is damaged, partly written or unsigned; one line says why."""


def _context(ca_file: str, key: str = "provisioning.ca_file") -> ssl.SSLContext:
    """Only the pinned CA (no system store unless it says "system"), host name checked.
    ``key`` names the setting in the error (the updater pins ``update.ca_file`` this way)."""
    try:
        return ssl.create_default_context(cafile=None if ca_file == "system" else ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(f"cannot load {key} {ca_file!r}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None


tls_context = _context  # the one TLS client set-up: provisioning and firmware.update.download


def fetch(url: str, ca_file: str, timeout: float, max_size: int) -> bytes:
    """GET ``url`` over HTTPS: the body of a 200 answer of at most ``max_size`` bytes."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise FetchError("provisioning.url is not an https:// URL")  # config refuses it first
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout,
                                       context=_context(ca_file))
    try:
        conn.request("GET", target, headers={"User-Agent": f"intercom/{__version__}",
                                             "Accept": "application/yaml, text/yaml, */*",
                                             "Connection": "close"})
        resp = conn.getresponse()
        if resp.status != 200:
            extra = " (redirects are not followed)" if 300 <= resp.status < 400 else ""
            raise FetchError(f"the server answered HTTP {resp.status} {resp.reason}{extra}")
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > max_size:
            raise FetchError(f"the document is {int(length)} bytes, more than "
                             f"provisioning.max_size ({max_size})")
        body = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FetchError(f"the server took longer than provisioning.timeout "
                                 f"({timeout:g} s)")
            if conn.sock is not None:
                conn.sock.settimeout(left)
            chunk = resp.read1(16384) if hasattr(resp, "read1") else resp.read(16384)
            if not chunk:
                break
            body += chunk
            if len(body) > max_size:
                raise FetchError(f"the document is larger than provisioning.max_size "
                                 f"({max_size} bytes)")
        return bytes(body)
    except ssl.SSLCertVerificationError as exc:
        raise FetchError(f"the server's certificate does not verify against "
                         f"provisioning.ca_file: {exc.verify_message or exc.reason}") from None
    except ssl.SSLError as exc:
        raise FetchError(f"TLS with the server failed: {exc.reason or exc}") from None
    except TimeoutError:
        raise FetchError(f"the server took longer than provisioning.timeout "
                         f"({timeout:g} s)") from None
    except OSError as exc:
        raise FetchError(f"cannot reach the server: {exc.strerror or exc}") from None
    except http.client.HTTPException as exc:
        raise FetchError(f"the server's answer is not HTTP: {type(exc).__name__}") from None
    finally:
        conn.close()


# ----------------------------------------------------------------------------- the MAC
def route_interface(address: str, routes: Path = ROUTES) -> str | None:
    """The interface of the longest matching IPv4 route to ``address`` (main table)."""
    ip = int(ipaddress.IPv4Address(address))
    best: tuple[int, str] | None = None
    try:
        lines = routes.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        cols = line.split()
        if len(cols) < 8 or not int(cols[3], 16) & 1:  # RTF_UP
            continue
        dest, mask = (int.from_bytes(bytes.fromhex(c), "little") for c in (cols[1], cols[7]))
        if ip & mask == dest:
            prefix = bin(mask).count("1")
            if best is None or prefix > best[0]:
                best = (prefix, cols[0])
    return best[1] if best else None


def interface_mac(name: str, net: Path = NET) -> str | None:
    """``/sys/class/net/<name>/address`` as 12 hex digits; None for none or all zeros."""
    try:
        return normalise_mac((net / name / "address").read_text())
    except OSError:
        return None


def route_mac(host: str, port: int, routes: Path = ROUTES, net: Path = NET) -> str:
    """The MAC of the interface that routes to the provisioning server."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchError(f"cannot resolve the provisioning server {host!r}: "
                         f"{exc.strerror or exc}") from None
    address = str(infos[0][4][0])
    iface = route_interface(address, routes)
    if iface is None:
        raise FetchError(f"no route to the provisioning server {address} yet")
    mac = interface_mac(iface, net)
    if mac is None:
        raise FetchError(f"interface {iface} (the route to {address}) has no MAC address: "
                         "set provisioning.mac")
    return mac


# ----------------------------------------------------------------------------- signature
def _openssl(args: list[str], what: str) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which("openssl")
    if exe is None:
        raise SignatureError(f"cannot {what}: the openssl command is missing")
    try:
        return subprocess.run([exe, *args], capture_output=True, timeout=OPENSSL_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise SignatureError(f"cannot {what}: openssl took longer than "
                             f"{OPENSSL_TIMEOUT:g} s") from None
    except OSError as exc:
        raise SignatureError(f"cannot {what}: {exc.strerror or exc}") from None


def _first_line(data: bytes) -> str:
    lines = [x for x in data.decode("utf-8", "replace").splitlines() if x.strip()]
    return lines[0].strip() if lines else "no reason given"


def public_key(cert_file: str) -> bytes:
    """The PEM public key of ``cert_file`` (a certificate, or already a public key)."""
    try:
        pem = Path(cert_file).read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read provisioning.signing_cert {cert_file!r}: "
                             f"{exc.strerror or exc}") from None
    if b"-----BEGIN PUBLIC KEY-----" in pem:
        return pem
    done = _openssl(["x509", "-pubkey", "-noout", "-in", cert_file],
                    "read provisioning.signing_cert")
    if done.returncode != 0 or b"-----BEGIN PUBLIC KEY-----" not in done.stdout:
        raise SignatureError(f"provisioning.signing_cert {cert_file!r} is not a PEM "
                             f"certificate: {_first_line(done.stderr)}")
    return done.stdout


def verify(body: bytes, signature: bytes, cert_file: str) -> None:
    """Nothing when ``signature`` is the signature over ``body`` (SHA-256, RSA or ECDSA) by the
    key of ``cert_file``; SignatureError otherwise."""
    if not signature:
        raise SignatureError("the signature is empty")
    if len(signature) > MAX_SIGNATURE:
        raise SignatureError(f"the signature is larger than {MAX_SIGNATURE} bytes")
    key = public_key(cert_file)
    with tempfile.TemporaryDirectory(prefix="intercom-sig-") as tmp:
        files = {"key.pem": key, "doc": body, "doc.sig": signature}
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        done = _openssl(["dgst", "-sha256", "-verify", f"{tmp}/key.pem", "-signature",
                         f"{tmp}/doc.sig", f"{tmp}/doc"], "check the signature")
    if done.returncode != 0 or b"Verified OK" not in done.stdout:
        raise SignatureError("the signature does not verify with provisioning.signing_cert "
                             "(another key, or the document was changed)")


def sign(body: bytes, key_file: str) -> bytes:
    """The signature ``verify`` accepts: ``openssl dgst -sha256 -sign KEY`` (RSA or ECDSA)."""
    with tempfile.TemporaryDirectory(prefix="intercom-sign-") as tmp:
        (Path(tmp) / "doc").write_bytes(body)
        done = _openssl(["dgst", "-sha256", "-sign", key_file, "-out", f"{tmp}/doc.sig",
                         f"{tmp}/doc"], f"sign with {key_file}")
        if done.returncode != 0:
            raise SignatureError(f"cannot sign with {key_file}: {_first_line(done.stderr)} "
                                 "(an RSA or ECDSA private key in PEM is needed)")
        return (Path(tmp) / "doc.sig").read_bytes()


# ----------------------------------------------------------------------------- DHCP
def lease_option43(text: str) -> bytes | None:
    """DHCP option 43 (vendor-specific) in a systemd-networkd lease file: its
    ``VENDOR_SPECIFIC=<hex>`` line (networkd keeps 43 and the private options 224-254 there;
    option 66 it drops while parsing the answer). None when the lease has none."""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VENDOR_SPECIFIC":
            try:
                return bytes.fromhex(value.strip())
            except ValueError:
                return None
    return None


def dhcp_options(leases: Path) -> list[tuple[str, bytes]]:
    """(interface index, option 43) of every lease that has one, by interface index."""
    try:
        names = sorted((p for p in leases.iterdir() if p.name.isdigit()),
                       key=lambda p: int(p.name))
    except OSError:
        return []
    found = []
    for path in names:
        try:
            with path.open("rb") as f:
                text = f.read(MAX_LEASE).decode("ascii", "replace")
        except OSError:
            continue
        if (value := lease_option43(text)) is not None:
            found.append((path.name, value))
    return found


# ----------------------------------------------------------------------------- the cache
def data_usable(folder: Path | None = None) -> bool:
    """True when ``folder`` (default ``DATA``, on the data partition) exists and this process
    may write there: the partition is mounted, not fallen back to read-only, and the service
    may use it."""
    folder = DATA if folder is None else folder
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


_HEADER = re.compile(rb"# intercom provisioning cache sha256=([0-9a-f]{64})"
                     rb"(?: sig=([A-Za-z0-9+/=]{1,12000}))?\n")


def pack(body: bytes, signature: bytes | None) -> bytes:
    """The cache file: one YAML comment line with the document's SHA-256 (and its signature,
    base64), then the document as it came."""
    sig = f" sig={base64.b64encode(signature).decode()}" if signature else ""
    return (f"# intercom provisioning cache sha256={hashlib.sha256(body).hexdigest()}{sig}\n"
            .encode() + body)


def unpack(data: bytes) -> tuple[bytes, bytes | None]:
    """(document, signature) of a cache file; CacheError when it is not exactly what ``pack``
    wrote (a damaged or partly written file, or one from an older release)."""
    m = _HEADER.match(data)
    if not m:
        raise CacheError("no checksum line (damaged, or written by an older release)")
    body = data[m.end():]
    if hashlib.sha256(body).hexdigest().encode() != m[1]:
        raise CacheError("the checksum does not match (damaged or partly written)")
    return body, base64.b64decode(m[2]) if m[2] else None


def read_cache(folder: Path, name: str, max_size: int,
               signing_cert: str | None) -> tuple[bytes, bytes | None] | None:
    """The cached (document, signature), checked: None when there is none; CacheError (one
    line) when it is damaged, or ``signing_cert`` is set and its signature is missing or does
    not verify (a key changed on the card refuses what the old key signed)."""
    limit = max_size + 16384  # the checksum line and a signature
    try:
        fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symlink (ELOOP) is refused like any unreadable file
        raise CacheError(f"cannot read it: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise CacheError(f"it is larger than provisioning.max_size ({max_size} bytes)")
    body, sig = unpack(data)
    if signing_cert:
        if sig is None:
            raise CacheError("it has no signature and provisioning.signing_cert is set")
        try:
            verify(body, sig, signing_cert)
        except SignatureError as exc:
            raise CacheError(str(exc)) from None
    return body, sig


def save_cache(folder: Path, name: str, body: bytes, signature: bytes | None) -> None:
    """Keep the document (and its signature) as ``read_cache`` reads it back."""
    save(folder, name, pack(body, signature))


def save(folder: Path, name: str, body: bytes) -> None:
    """Write ``folder/name`` atomically (a temporary file renamed over it), mode 0600: a power
    cut leaves the old document or the new one, never half of one."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, folder / name)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

