"""Provisioning's I/O: the HTTPS fetch, this box's MAC, and the last good document on disk.

Owns the one GET of ``provisioning.url`` (HTTPS only, the certificate checked against the pinned
CA and the URL's host name, no redirect followed, a size cap and one deadline for the whole
exchange, every failure one line), the MAC of the interface that routes to the server (from
/proc/net/route and /sys/class/net), and the cache file (written atomically, mode 0600, in a
folder of mode 0700). Blocking calls: the caller runs them in a thread. Knows nothing about
what a document means (``firmware.provisioning``) or about the intercom.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urlsplit

from . import __version__
from .config import normalise_mac

ROUTES = Path("/proc/net/route")
NET = Path("/sys/class/net")


class FetchError(Exception):
    """The document could not be fetched; the message says why in one line."""


def _context(ca_file: str) -> ssl.SSLContext:
    """Only the pinned CA (no system store unless it says "system"), host name checked."""
    try:
        return ssl.create_default_context(cafile=None if ca_file == "system" else ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(f"cannot load provisioning.ca_file {ca_file!r}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None


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


# ----------------------------------------------------------------------------- the cache
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


def load(folder: Path, name: str, max_size: int) -> bytes | None:
    """The cached document, or None (missing, unreadable or larger than the cap: the caller
    validates what it gets like a fetched one)."""
    try:
        fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_size + 1)
    return data if len(data) <= max_size else None
