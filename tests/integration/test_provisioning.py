"""Provisioning by MAC against a real HTTPS server on loopback (Python's http.server + ssl, a
test CA made by openssl) and the real Asterisk 22: a box whose boot YAML has no sip.password
registers with the provisioned one; an invalid document is refused and the last good kept
(still registered); a changed document (another extension) waits for the end of a call and is
then applied in the same process (un-REGISTER, REGISTER); with the server down at a restart
the cached last good document is used; a server whose certificate the pinned CA does not sign
is refused in one line and nothing is fetched in clear; the URL from DHCP option 43 (a real
networkd lease) and a detached signature checked with the pinned signing certificate."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devtools.asterisk import PASSWORDS, Asterisk
from devtools.box.process import Intercom
from devtools.certificate import make_ca, make_server_cert
from devtools.waiting import wait_for
from firmware import provisioning_io as pio

from . import networkd_dhcp

pytestmark = pytest.mark.integration

MAC = "b8:27:eb:00:00:01"
FILE = "b827eb000001.yaml"


class Server:
    """A static HTTPS server on 127.0.0.1 serving ``docs`` (path -> bytes), counting GETs."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.docs: dict[str, bytes] = {}
        self.gets: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.gets.append(self.path)
                body = outer.docs.get(self.path.lstrip("/"))
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/{{mac}}.yaml"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prov-pki")
    ca = make_ca(root / "ca", "Provisioning Test CA")
    wrong = make_ca(root / "wrong", "Some Other CA")
    cert, key = make_server_cert(root / "ca", ca, "IP:127.0.0.1")
    return {"ca": ca[0], "wrong_ca": wrong[0], "cert": cert, "key": key}


@pytest.fixture
def server(pki: dict[str, Path]) -> Iterator[Server]:
    s = Server(pki["cert"], pki["key"])
    yield s
    s.close()


def provisioned_box(tmp: Path, asterisk: Asterisk, server: Server, ca: Path,
                    **prov: Any) -> Intercom:
    """An Intercom whose boot YAML has no sip.password, only where to fetch the rest."""
    box = Intercom(tmp, asterisk.port, password="")
    doc = json.loads(box.config.read_text())
    doc["provisioning"] = {"url": server.url(), "ca_file": str(ca), "mac": MAC,
                           "interval": 1, "retry": 1, "timeout": 5, **prov}
    box.config.write_text(json.dumps(doc))
    return box


def prov_status(box: Intercom) -> dict[str, Any]:
    return box.status().get("provisioning") or {}


def doc(ext: str, **sip: Any) -> bytes:
    return json.dumps({"sip": {"username": ext, "password": PASSWORDS[ext], **sip}}).encode()


def test_provisioned_by_mac_kept_applied_when_idle_and_cached(
        asterisk: Asterisk, server: Server, pki: dict[str, Path], tmp_path: Path) -> None:
    server.docs[FILE] = doc("5002", display_name="Provisioned door")
    box = provisioned_box(tmp_path / "box", asterisk, server, pki["ca"]).start()
    try:
        wait_for(lambda: box.status().get("registered") and prov_status(box).get("applied"),
                 20, 0.2, "registered with the provisioned password")
        assert asterisk.registered("5002")
        st = prov_status(box)
        assert st["url"] == f"https://127.0.0.1:{server.port}/{FILE}" and st["source"] == "server"
        assert server.gets[0] == f"/{FILE}", "the MAC override, 12 lowercase hex digits"
        good = st["applied"]

        # an invalid document: refused with its line, the last good kept, still registered
        server.docs[FILE] = b"sip:\n  password: leaked-pw\ncalls:\n  door_code: 'zz'\n"
        wait_for(lambda: prov_status(box).get("last_result") == "refused", 15, 0.2, "refused")
        st = box.status()
        assert "calls.door_code (line 4) may only contain DTMF" in st["provisioning"]["last_error"]
        assert st["provisioning"]["applied"] == good and st["registered"]
        assert asterisk.registered("5002")

        # a changed document while the box is in a call: applied only after the call
        assert box.cmd("call", "600")["ok"]
        box.wait_state("in_call")
        server.docs[FILE] = doc("5003", display_name="Hall door")
        wait_for(lambda: prov_status(box).get("pending"), 15, 0.2, "the new document fetched")
        gets = len(server.gets)
        wait_for(lambda: len(server.gets) >= gets + 3, 15, 0.2, "three more fetches")
        st = box.status()
        assert st["state"] == "in_call" and st["username"] == "5002", "the call was disturbed"
        assert box.cmd("hangup")["ok"]
        wait_for(lambda: box.status().get("username") == "5003" and box.status()["registered"],
                 20, 0.2, "re-registered as 5003")
        wait_for(lambda: not asterisk.registered("5002"), 10, 0.2, "5002 un-REGISTERed")
        assert asterisk.registered("5003")
        assert "applied in" in box.log()
        cache = box.dir / "provisioning" / "provisioned.yaml"
        assert cache.stat().st_mode & 0o777 == 0o600 and b"5003" in cache.read_bytes()
        log = box.log()
        for secret in ("leaked-pw", PASSWORDS["5003"], PASSWORDS["5002"]):
            assert secret not in log and secret not in json.dumps(box.status())
    finally:
        box.stop()

    # the server is down at the restart: the cached last good document is used
    server.close()
    box.start()
    try:
        wait_for(lambda: prov_status(box).get("last_result") == "failed"
                 and box.status().get("registered"), 20, 0.2, "registered from the cache")
        st = box.status()
        assert st["username"] == "5003" and st["provisioning"]["source"] == "cache"
        assert "cannot reach the server" in st["provisioning"]["last_error"]
    finally:
        box.stop()


def test_a_server_the_pinned_ca_did_not_sign_is_refused(
        asterisk: Asterisk, server: Server, pki: dict[str, Path], tmp_path: Path) -> None:
    server.docs[FILE] = doc("5002")
    box = provisioned_box(tmp_path / "box", asterisk, server, pki["wrong_ca"]).start()
    try:
        wait_for(lambda: prov_status(box).get("last_result") == "failed", 15, 0.2, "refused")
        st = box.status()
        assert "certificate does not verify against provisioning.ca_file" in \
            st["provisioning"]["last_error"]
        assert st["provisioning"]["applied"] is None and st["provisioning"]["source"] == "boot"
        assert not server.gets, "nothing was fetched past the failed handshake"
        assert box.log().count("certificate does not verify") >= 1
        assert not asterisk.registered("5002"), "the boot YAML has no password"
    finally:
        box.stop()


def test_dhcp_option_43_names_the_server_and_only_a_signed_document_is_applied(
        asterisk: Asterisk, server: Server, pki: dict[str, Path], tmp_path: Path) -> None:
    """A real DHCP exchange (dnsmasq -> systemd-networkd in network namespaces, the image's
    .network settings) hands out the loopback server's URL in option 43 (vendor sub-option 1);
    networkd's lease file is what the box reads. Option 66, asked for and sent, never reaches
    the lease. The box's card pins the CA and a signing certificate: the signed document is
    applied (registers with Asterisk), a changed one without a new signature is refused."""
    url = f"https://127.0.0.1:{server.port}/{{mac}}.yaml"
    try:
        lease, said = networkd_dhcp.lease(
            tmp_path / "dhcp", [f"vendor:intercom-rpi,1,{url}", "66,https://127.0.0.9/tftp/"],
            networkd_dhcp.NETWORK.replace("RequestOptions=43", "RequestOptions=43 66"))
    except networkd_dhcp.UnavailableError as exc:
        pytest.fail(str(exc))
    assert "option: 66 tftp-server  https://127.0.0.9/tftp/" in said, "the server sent 66"
    assert "VENDOR_SPECIFIC=" in lease and b"127.0.0.9".hex() not in lease
    leases = tmp_path / "leases"
    leases.mkdir()
    (leases / "2").write_text(lease)

    key, cert = tmp_path / "sign.key", tmp_path / "sign.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-subj", "/CN=provisioning signer",
                    "-days", "30"], check=True, capture_output=True, timeout=60)
    good = doc("5002", display_name="Signed door")
    server.docs[FILE] = good
    server.docs[FILE + ".sig"] = pio.sign(good, str(key))
    box = provisioned_box(tmp_path / "box", asterisk, server, pki["ca"], url="dhcp",
                          dhcp_leases=str(leases), signing_cert=str(cert)).start()
    try:
        wait_for(lambda: box.status().get("registered") and prov_status(box).get("applied"),
                 20, 0.2, "registered with the signed document")
        st = prov_status(box)
        assert st["url"] == f"https://127.0.0.1:{server.port}/{FILE}"
        assert st["url_from"] == "dhcp option 43" and st["signed"] is True
        assert server.gets[:2] == [f"/{FILE}", f"/{FILE}.sig"]
        assert asterisk.registered("5002")

        server.docs[FILE] = doc("5003")  # the old signature stays
        wait_for(lambda: prov_status(box).get("last_result") == "refused", 15, 0.2, "refused")
        st = box.status()
        assert "does not verify with provisioning.signing_cert" in \
            st["provisioning"]["last_error"]
        assert st["username"] == "5002" and st["registered"]
        assert PASSWORDS["5003"] not in box.log()
    finally:
        box.stop()
