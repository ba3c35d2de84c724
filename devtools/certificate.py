"""The console's HTTPS/WSS certificate: a local CA, name-constrained to this host and private
addresses, and a server certificate for the names asked, made with openssl and kept in the
cache folder. Used by ``./build.sh run`` and the tests that serve over TLS. Also the SIP TLS
tests' throw-away authorities and PBX certificates (``make_ca``, ``make_server_cert``)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from .paths import CACHE


@dataclass(frozen=True)
class WebCertificate:
    """The HTTPS/WSS certificate of ``./build.sh run``: ``cert`` (server certificate followed by
    its CA), ``key``, and ``ca``, the local authority a browser is told to trust."""

    cert: Path
    key: Path
    ca: Path


PRIVATE_NETS = ("127.0.0.0/255.0.0.0", "10.0.0.0/255.0.0.0", "172.16.0.0/255.240.0.0",
                "192.168.0.0/255.255.0.0", "169.254.0.0/255.255.0.0")


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {r.stderr.strip().splitlines()[-1:]}")


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A throw-away CA for a test (2 days) in ``folder``: (certificate, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", f"/CN={name}", cwd=folder)
    return folder / "ca.crt", folder / "ca.key"


def make_server_cert(folder: Path, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    """A PBX certificate signed by ``ca`` for the subjectAltName ``san`` (e.g.
    ``DNS:pbx1.test`` or ``IP:127.0.0.1,DNS:localhost``), in ``folder`` (one per certificate):
    (certificate, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ext.cnf").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                                    "extendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "pbx.key", "-out", "pbx.csr",
             "-subj", "/CN=intercom test PBX", cwd=folder)
    _openssl("x509", "-req", "-in", "pbx.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", "pbx.crt", "-days", "2", "-extfile", "ext.cnf",
             cwd=folder)
    return folder / "pbx.crt", folder / "pbx.key"


def web_certificate(names: list[str], folder: Path | None = None) -> WebCertificate:
    """A local CA (made once, 10 years, limited by name constraints to this host's names and
    private addresses, so trusting it cannot vouch for anyone else's site) and a server
    certificate for ``names`` (host names and IP addresses), re-issued when a name is missing
    or it expires within 30 days. Keys are readable by the owner only."""
    folder = folder or CACHE / "webrtc"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    ips = [n for n in names if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", n)]
    dns = [n for n in names if n not in ips]
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, crt = folder / "server.key", folder / "server.crt"
    if not (ca_key.exists() and ca_crt.exists()):
        permitted = [f"permitted;DNS:{d}" for d in dns]
        permitted += [f"permitted;IP:{net}" for net in PRIVATE_NETS]
        permitted += [f"permitted;IP:{ip}/255.255.255.255" for ip in ips if "." in ip
                      and not _private(ip)]
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", ca_key.name, "-out", ca_crt.name, "-days", "3650",
                 "-subj", f"/CN=Door intercom local CA ({socket.gethostname()})",
                 "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "nameConstraints=critical," + ",".join(permitted), cwd=folder)
        os.chmod(ca_key, 0o600)
        crt.unlink(missing_ok=True)
    names_file = folder / "server.names"
    wanted = sorted(set(names))
    stale = (not crt.exists() or not names_file.exists()
             or not set(wanted) <= set(names_file.read_text().split())
             or subprocess.run(["openssl", "x509", "-checkend", str(30 * 86400), "-noout",
                                "-in", str(crt)], capture_output=True).returncode != 0)
    if stale:
        san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{ip}" for ip in ips])
        (folder / "server.ext").write_text(
            f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", key.name, "-out", "server.csr",
                 "-subj", f"/CN={dns[0] if dns else ips[0]}", cwd=folder)
        os.chmod(key, 0o600)
        # 825 days: the longest validity Apple's browsers accept for a locally trusted certificate
        _openssl("x509", "-req", "-in", "server.csr", "-CA", ca_crt.name, "-CAkey", ca_key.name,
                 "-set_serial", f"0x{uuid.uuid4().hex}", "-days", "825",
                 "-extfile", "server.ext", "-out", "server.pem", cwd=folder)
        crt.write_bytes((folder / "server.pem").read_bytes() + ca_crt.read_bytes())
        for scratch in ("server.csr", "server.ext", "server.pem"):
            (folder / scratch).unlink()
        names_file.write_text("\n".join(wanted) + "\n")
    return WebCertificate(cert=crt, key=key, ca=ca_crt)


def _private(ip: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip).is_private
