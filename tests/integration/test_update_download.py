"""The bundle download (firmware.update.download) against a real HTTPS server on 127.0.0.1 with
a test CA (tests/integration/test_tls.py's openssl helpers): a good download lands complete and
only then under its final name; a second look with the server's ETag / Last-Modified costs a
304; the wrong CA, a redirect to http://, a bundle over update.max_size and a server that goes
silent each fail in one line with nothing left to mistake for a bundle; a download cut short
(or a power cut: bytes after the last fsync are lost or garbage) resumes with Range + If-Range,
and a bundle that changed on the server meanwhile starts over; a complete download whose
install never ended is reused while the server's file is unchanged (304)."""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devtools.certificate import make_ca, make_server_cert
from firmware.update import download
from firmware.update.state import UpdateError

pytestmark = pytest.mark.integration


class BundleServer:
    """A static HTTPS server for bundles: ETag / Last-Modified, conditional GETs, byte ranges
    with If-Range, redirects, and on demand a body cut after N bytes, a body without a length,
    or no answer at all. Every request is logged (path, status, the headers that matter)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        self.redirects: dict[str, str] = {}
        self.cut_after: int | None = None  # the next 200/206 body stops after this many bytes
        self.no_length = False  # bodies end at the connection's close
        self.ranges = True
        self.silent = False  # accept, then say nothing until closed
        self.release = threading.Event()
        self.log: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if outer.silent:
                    outer.release.wait(30)
                    return
                path = self.path.partition("?")[0]
                entry = {"path": self.path, **{h: self.headers.get(h) for h in (
                    "Range", "If-Range", "If-None-Match", "If-Modified-Since")}}
                outer.log.append(entry)
                if path in outer.redirects:
                    entry["status"] = 302
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                found = outer.files.get(path)
                if found is None:
                    entry["status"] = 404
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, etag, modified = found
                if self.headers.get("If-None-Match") == etag or (
                        self.headers.get("If-None-Match") is None
                        and self.headers.get("If-Modified-Since") == modified):
                    entry["status"] = 304
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range")
                if outer.ranges and rng and rng.startswith("bytes=") and \
                        self.headers.get("If-Range") in (etag, modified):
                    start = int(rng[len("bytes="):].split("-")[0])
                entry["status"] = 206 if start else 200
                self.send_response(entry["status"])
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", modified)
                self.send_header("Accept-Ranges", "bytes")
                part = body[start:]
                if start:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(body) - 1}/{len(body)}")
                if outer.no_length:
                    self.send_header("Connection", "close")
                else:
                    self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if outer.cut_after is not None:
                    part, outer.cut_after = part[:outer.cut_after], None
                    self.wfile.write(part)
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(part)
                self.close_connection = outer.no_length

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def put(self, path: str, body: bytes, when: float = 1_700_000_000.0) -> None:
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        self.files[path] = (body, etag, email.utils.formatdate(when, usegmt=True))

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("update-pki")
    ca = make_ca(root / "ca", "Update Test CA")
    wrong = make_ca(root / "wrong", "Some Other CA")
    cert, key = make_server_cert(root / "ca", ca, "IP:127.0.0.1")
    return {"ca": ca[0], "wrong_ca": wrong[0], "cert": cert, "key": key}


@pytest.fixture
def server(pki: dict[str, Path]) -> Iterator[BundleServer]:
    s = BundleServer(pki["cert"], pki["key"])
    yield s
    s.close()


BODY = os.urandom(3 << 20)  # stands for a bundle: the download does not look inside
MAX = 8 << 20


def leftovers(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_a_good_download_then_not_again_while_unchanged(
        server: BundleServer, pki: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "SYNC_EVERY", 256 << 10)
    server.put("/intercom.raucb", BODY)
    got = download.fetch(server.url("/intercom.raucb?token=s3cret"), str(pki["ca"]), tmp_path,
                         MAX)
    assert got is not None and got.size == len(BODY)
    assert got.path == tmp_path / download.DONE and got.path.read_bytes() == BODY
    assert stat.S_IMODE(got.path.stat().st_mode) == 0o600
    # download.json names the complete file until the install is over (discard)
    assert leftovers(tmp_path) == {download.DONE, download.META}, "no .part left"
    assert "s3cret" not in got.url and got.etag == server.files["/intercom.raucb"][1]
    # the next interval: the same bundle is not downloaded again
    known = {"etag": got.etag, "last_modified": got.last_modified}
    assert download.fetch(server.url("/intercom.raucb?token=s3cret"), str(pki["ca"]),
                          tmp_path, MAX, known) is None
    assert server.log[-1]["status"] == 304 and server.log[-1]["If-None-Match"] == got.etag
    assert download.DONE not in leftovers(tmp_path), "a 304 leaves no stale bundle behind"
    # a server without ETags: Last-Modified alone
    assert download.fetch(server.url("/intercom.raucb"), str(pki["ca"]), tmp_path, MAX,
                          {"etag": "", "last_modified": got.last_modified}) is None
    assert server.log[-1]["status"] == 304
    # a new bundle on the server is fetched
    server.put("/intercom.raucb", BODY[::-1], when=1_800_000_000.0)
    again = download.fetch(server.url("/intercom.raucb"), str(pki["ca"]), tmp_path, MAX, known)
    assert again is not None and again.path.read_bytes() == BODY[::-1]


def expect_failure(call: Any, result: str, reason: str, words: str) -> UpdateError:
    with pytest.raises(UpdateError) as info:
        call()
    err = info.value
    assert (err.result, err.reason) == (result, reason), str(err)
    assert words in str(err) and "\n" not in str(err) and "s3cret" not in str(err)
    return err


def test_wrong_ca_http_redirect_and_http_errors_fail_in_one_line(
        server: BundleServer, pki: dict[str, Path], tmp_path: Path) -> None:
    server.put("/intercom.raucb", BODY)
    url = server.url("/intercom.raucb?token=s3cret")
    expect_failure(lambda: download.fetch(url, str(pki["wrong_ca"]), tmp_path, MAX),
                   "failed", "tls", "does not verify against update.ca_file")
    assert server.log == [], "nothing was asked of a server that did not prove itself"
    expect_failure(lambda: download.fetch(url, str(tmp_path / "none.pem"), tmp_path, MAX),
                   "failed", "ca_file", "cannot load update.ca_file")
    server.redirects["/old.raucb"] = f"http://127.0.0.1:{server.port}/intercom.raucb"
    expect_failure(lambda: download.fetch(server.url("/old.raucb?token=s3cret"),
                                          str(pki["ca"]), tmp_path, MAX),
                   "failed", "http", "redirects to http://: refused")
    assert [e["path"] for e in server.log] == ["/old.raucb?token=s3cret"], "never followed"
    server.redirects["/moved.raucb"] = "/intercom.raucb"  # https, relative: followed
    got = download.fetch(server.url("/moved.raucb"), str(pki["ca"]), tmp_path, MAX)
    assert got is not None and got.path.read_bytes() == BODY
    expect_failure(lambda: download.fetch(server.url("/nothing.raucb"), str(pki["ca"]),
                                          tmp_path, MAX),
                   "failed", "http", "HTTP 404")
    assert download.DONE not in leftovers(tmp_path)


def test_a_bundle_over_max_size_is_refused_and_not_kept(
        server: BundleServer, pki: dict[str, Path], tmp_path: Path) -> None:
    server.put("/big.raucb", BODY)
    small = len(BODY) - 1
    expect_failure(lambda: download.fetch(server.url("/big.raucb"), str(pki["ca"]), tmp_path,
                                          small),
                   "refused", "too big", f"more than update.max_size ({small})")
    assert leftovers(tmp_path) == set()
    server.no_length = True  # the size is only known by counting
    expect_failure(lambda: download.fetch(server.url("/big.raucb"), str(pki["ca"]), tmp_path,
                                          small),
                   "refused", "too big", "larger than update.max_size")
    assert leftovers(tmp_path) == set(), "the .part of a bundle over the cap is deleted"
    got = download.fetch(server.url("/big.raucb"), str(pki["ca"]), tmp_path, MAX)
    assert got is not None and got.path.read_bytes() == BODY, "no length, complete at close"


def test_a_download_cut_short_resumes_where_the_disk_has_it(
        server: BundleServer, pki: dict[str, Path], tmp_path: Path) -> None:
    server.put("/intercom.raucb", BODY)
    url = server.url("/intercom.raucb")
    server.cut_after = 1_000_000
    expect_failure(lambda: download.fetch(url, str(pki["ca"]), tmp_path, MAX),
                   "failed", "cut short", "kept and resumed")
    assert download.DONE not in leftovers(tmp_path), "a .part is never the bundle"
    meta = json.loads((tmp_path / download.META).read_text())
    assert meta["durable"] == 1_000_000 and (tmp_path / download.PART).stat().st_size == 1_000_000
    assert url not in json.dumps(meta), "the URL (a token may be in it) is kept as a digest"
    # a power cut: what came after the last fsync is on disk as garbage, maybe more of it
    # than the rest of the bundle
    with (tmp_path / download.PART).open("ab") as f:
        f.write(b"\x00garbage" * (len(BODY) // 8))
    got = download.fetch(url, str(pki["ca"]), tmp_path, MAX)
    assert server.log[-1]["Range"] == "bytes=1000000-" and server.log[-1]["status"] == 206
    assert server.log[-1]["If-Range"] == server.files["/intercom.raucb"][1]
    assert got is not None and got.path.read_bytes() == BODY
    assert leftovers(tmp_path) == {download.DONE, download.META}


def test_a_complete_download_left_by_a_cut_install_is_not_fetched_again(
        server: BundleServer, pki: dict[str, Path], tmp_path: Path) -> None:
    server.put("/intercom.raucb", BODY)
    url = server.url("/intercom.raucb")
    got = download.fetch(url, str(pki["ca"]), tmp_path, MAX)
    assert got is not None
    # the power goes during the install: no discard; the next pull asks whether the server's
    # file is still the one on disk, and installs that one again
    again = download.fetch(url, str(pki["ca"]), tmp_path, MAX)
    assert server.log[-1]["status"] == 304 and server.log[-1]["If-None-Match"] == got.etag
    assert again == got and again.path.read_bytes() == BODY
    # the caller's settled record of that very file (it runs here): nothing new, nothing kept
    known = {"etag": got.etag, "last_modified": got.last_modified}
    assert download.fetch(url, str(pki["ca"]), tmp_path, MAX, known) is None
    assert leftovers(tmp_path) == set()
    # a kept file the server no longer has: the new one is fetched in its place
    got = download.fetch(url, str(pki["ca"]), tmp_path, MAX)
    assert got is not None
    server.put("/intercom.raucb", BODY[::-1], when=1_800_000_000.0)
    new = download.fetch(url, str(pki["ca"]), tmp_path, MAX)
    assert server.log[-1]["status"] == 200
    assert new is not None and new.path.read_bytes() == BODY[::-1]
    # a kept file whose size is not the recorded one (a torn write) is fetched again
    with new.path.open("ab") as f:
        f.write(b"x")
    fresh = download.fetch(url, str(pki["ca"]), tmp_path, MAX)
    assert server.log[-1]["status"] == 200
    assert fresh is not None and fresh.path.read_bytes() == BODY[::-1]


def test_a_bundle_changed_on_the_server_during_a_resume_starts_over(
        server: BundleServer, pki: dict[str, Path], tmp_path: Path) -> None:
    server.put("/intercom.raucb", BODY)
    url = server.url("/intercom.raucb")
    server.cut_after = 500_000
    expect_failure(lambda: download.fetch(url, str(pki["ca"]), tmp_path, MAX),
                   "failed", "cut short", "resumed")
    server.put("/intercom.raucb", BODY[::-1], when=1_800_000_000.0)
    got = download.fetch(url, str(pki["ca"]), tmp_path, MAX)
    assert server.log[-1]["Range"] == "bytes=500000-" and server.log[-1]["status"] == 200
    assert got is not None and got.path.read_bytes() == BODY[::-1]
    download.discard(tmp_path)  # installed: the caller forgets it
    # a .part without its record (or for another URL) is never resumed
    server.cut_after = 500_000
    with pytest.raises(UpdateError):
        download.fetch(url, str(pki["ca"]), tmp_path, MAX)
    (tmp_path / download.META).unlink()
    got = download.fetch(url, str(pki["ca"]), tmp_path, MAX)
    assert server.log[-1]["Range"] is None and got is not None
    assert got.path.read_bytes() == BODY[::-1]


def test_a_silent_server_times_out_in_one_line(
        server: BundleServer, pki: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "TIMEOUT", 1.0)
    server.put("/intercom.raucb", BODY)
    server.silent = True
    expect_failure(lambda: download.fetch(server.url("/intercom.raucb"), str(pki["ca"]),
                                          tmp_path, MAX),
                   "failed", "timeout", "the server sent nothing for 1 s")
    server.silent = False
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    expect_failure(lambda: download.fetch(f"https://127.0.0.1:{dead}/x.raucb", str(pki["ca"]),
                                          tmp_path, MAX),
                   "failed", "network", "cannot reach the update server")
