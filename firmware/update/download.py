"""The HTTPS pull of a bundle into /data/update.

Owns one download of ``update.url``: HTTPS only with the CA pinned exactly like provisioning
(``provisioning_io.tls_context``: that CA alone, the host name checked), redirects followed to
https only (a redirect to http:// is refused), at most ``update.max_size`` bytes and no more than
the folder's free space, a timeout for a server that goes silent, and the file written as
``download.raucb.part`` and renamed to ``download.raucb`` only when complete (a ``.part`` is never
a bundle). A download cut short (network, power) resumes from what was fsync'ed, recorded in
``download.json`` (the URL's digest, the server's validator, the length on disk), with
``Range`` + ``If-Range``; a changed file on the server starts over. A complete download that
was never installed (the power went, or the updater died, during its check or install) keeps
its record too: the next pull asks the server conditionally and, while the file there is
unchanged (304), installs the one on disk again instead of fetching it a second time (every
check runs again on it).

Not downloading the same bundle every interval: the request is conditional (``If-None-Match``
with the ETag, ``If-Modified-Since`` with the Last-Modified the server gave for the last bundle
it served, kept in the state file). ``304 Not Modified`` = nothing new. nginx, caddy and
Python's http.server send these validators; a server that sends neither gets the whole bundle
each time, which the checks then refuse as "already installed".

Every failure is an UpdateError with one line (no URL query, no user info). Blocking: run it
in a thread or a process of its own. Knows nothing about RAUC, slots or the intercom.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .. import __version__
from ..provisioning import shown_url
from ..provisioning_io import FetchError, tls_context
from .state import UpdateError, write_atomic

PART = "download.raucb.part"
DONE = "download.raucb"
META = "download.json"
TIMEOUT = 60.0  # s the server may stay silent (connect, or between two reads)
MAX_REDIRECTS = 5
SYNC_EVERY = 8 << 20  # bytes between two fsyncs of the .part (what a power cut can lose)
CHUNK = 256 << 10
SPARE = 16 << 20  # bytes left free on /data beyond the bundle (RAUC's status, the config)


@dataclass(frozen=True)
class Fetched:
    """A complete download: the file and what identifies it on the server."""

    path: Path
    size: int
    etag: str
    last_modified: str
    url: str  # the shown form (no query)


def url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _meta(folder: Path) -> dict[str, object]:
    try:
        raw = json.loads((folder / META).read_bytes()[:4096])
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _save_meta(folder: Path, meta: dict[str, object]) -> None:
    write_atomic(folder / META, json.dumps(meta, sort_keys=True).encode(), 0o600)


def discard(folder: Path) -> None:
    """Forget any download (after an install, or when the server's file changed)."""
    for name in (PART, META, DONE):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()


def _resume_point(folder: Path, url: str) -> tuple[int, str]:
    """(bytes to keep, If-Range validator) of a .part from an earlier try of ``url``; the
    .part is cut back to what was fsync'ed, or removed when it cannot be resumed."""
    meta = _meta(folder)
    part = folder / PART
    durable = meta.get("durable")
    validator = meta.get("etag") or meta.get("last_modified")
    try:
        have = part.stat().st_size
    except FileNotFoundError:
        have = -1
    if not (meta.get("url") == url_digest(url) and isinstance(durable, int)
            and isinstance(validator, str) and validator and 0 < durable <= have):
        for name in (PART, META):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        return 0, ""
    os.truncate(part, durable)
    return durable, validator


class _Response:
    """One open HTTPS response and its connection."""

    def __init__(self, conn: http.client.HTTPSConnection, resp: http.client.HTTPResponse,
                 url: str) -> None:
        self.conn, self.resp, self.url = conn, resp, url

    def close(self) -> None:
        self.conn.close()


def _open(url: str, ctx: ssl.SSLContext, headers: dict[str, str]) -> _Response:
    """GET ``url``, following https redirects; the response is not read yet."""
    shown = shown_url(url)
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise UpdateError("http", f"refused {shown}: updates are fetched over HTTPS only",
                              "failed")
        if parts.username or parts.password:
            raise UpdateError("http", "refused a URL with a user name or password", "failed")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=TIMEOUT,
                                           context=ctx)
        conn.request("GET", target, headers={"User-Agent": f"intercom/{__version__}",
                                             **headers})
        resp = conn.getresponse()
        if resp.status in (301, 302, 303, 307, 308):
            location = resp.getheader("Location") or ""
            conn.close()
            nxt = urljoin(url, location)
            if urlsplit(nxt).scheme != "https":
                raise UpdateError("http", f"{shown} redirects to {urlsplit(nxt).scheme or '?'}"
                                  "://: refused, updates are fetched over HTTPS only", "failed")
            url, shown = nxt, shown_url(nxt)
            continue
        return _Response(conn, resp, url)
    raise UpdateError("http", f"more than {MAX_REDIRECTS} redirects from {shown_url(url)}",
                      "failed")


def _total(resp: http.client.HTTPResponse, offset: int) -> int | None:
    """The whole file's size from Content-Range (206) or Content-Length (200)."""
    if resp.status == 206:
        rng = resp.getheader("Content-Range") or ""
        try:
            unit, _, spec = rng.partition(" ")
            span, _, whole = spec.partition("/")
            start = int(span.partition("-")[0])
            if unit != "bytes" or start != offset:
                return None
            return int(whole)
        except ValueError:
            return None
    length = resp.getheader("Content-Length")
    return int(length) if length and length.isdigit() else None


def fetch(url: str, ca_file: str, folder: str | Path, max_size: int,
          known: dict[str, str] | None = None) -> Fetched | None:
    """Download ``url`` into ``folder``/download.raucb. ``known``: the ETag / Last-Modified of
    the last bundle this URL served (None: fetch whatever is there). Returns None when the
    server says it has not changed; raises UpdateError for every failure."""
    folder = Path(folder)
    shown = shown_url(url)
    try:
        ctx = tls_context(ca_file, "update.ca_file")
    except FetchError as exc:
        raise UpdateError("ca_file", str(exc), "failed") from None
    try:
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        kept = _kept_download(folder, url)
        if kept is not None and known and (kept.etag, kept.last_modified) == \
                (known.get("etag", ""), known.get("last_modified", "")):
            discard(folder)  # the caller settled that very file (it runs here, or was refused)
            kept = None
        if kept is None:
            with contextlib.suppress(FileNotFoundError):
                (folder / DONE).unlink()
            offset, validator = _resume_point(folder, url)
        else:
            offset, validator = 0, ""
    except OSError as exc:
        raise UpdateError("storage", f"cannot use {folder}: {exc.strerror or exc}",
                          "failed") from None
    headers = {"Accept": "application/octet-stream, */*", "Connection": "close"}
    if kept is not None:  # is the server's file still the one on disk?
        known = {"etag": kept.etag, "last_modified": kept.last_modified}
    if offset:
        headers.update({"Range": f"bytes={offset}-", "If-Range": validator})
    elif known:
        if known.get("etag"):
            headers["If-None-Match"] = known["etag"]
        if known.get("last_modified"):
            headers["If-Modified-Since"] = known["last_modified"]
    try:
        return _transfer(url, shown, ctx, headers, folder, offset, max_size, kept)
    except ssl.SSLCertVerificationError as exc:
        raise UpdateError("tls", f"the update server's certificate does not verify against "
                          f"update.ca_file: {exc.verify_message or exc.reason}", "failed") \
            from None
    except ssl.SSLError as exc:
        raise UpdateError("tls", f"TLS with the update server failed: {exc.reason or exc}",
                          "failed") from None
    except TimeoutError:
        raise UpdateError("timeout", f"{shown}: the server sent nothing for {TIMEOUT:g} s "
                          "(what arrived is kept and resumed)", "failed") from None
    except http.client.IncompleteRead:
        raise UpdateError("cut short", f"{shown}: the connection ended before the whole "
                          "bundle arrived (what arrived is kept and resumed)", "failed") \
            from None
    except http.client.HTTPException as exc:
        raise UpdateError("http", f"{shown}: the server's answer is not HTTP "
                          f"({type(exc).__name__})", "failed") from None
    except OSError as exc:
        raise UpdateError("network", f"cannot reach the update server: "
                          f"{exc.strerror or exc}", "failed") from None


def _kept_download(folder: Path, url: str) -> Fetched | None:
    """The complete download of ``url`` left by an install that never ended, when its record
    names the URL, a validator and the file's exact size; else None."""
    meta = _meta(folder)
    complete = meta.get("complete")
    etag, modified = meta.get("etag"), meta.get("last_modified")
    if not (meta.get("url") == url_digest(url) and isinstance(complete, int)
            and isinstance(etag, str) and isinstance(modified, str) and (etag or modified)):
        return None
    try:
        if (folder / DONE).stat().st_size != complete:
            return None
    except FileNotFoundError:
        return None
    return Fetched(folder / DONE, complete, etag, modified, shown_url(url))


def _transfer(url: str, shown: str, ctx: ssl.SSLContext, headers: dict[str, str],
              folder: Path, offset: int, max_size: int,
              kept: Fetched | None = None) -> Fetched | None:
    r = _open(url, ctx, headers)
    try:
        resp = r.resp
        if resp.status == 304:
            return kept  # None: nothing new; else the complete file on disk is still current
        if kept is not None:  # the server has another file now: the one on disk goes
            discard(folder)
        if resp.status == 416 and offset:  # the file shrank: start over next time
            discard(folder)
            raise UpdateError("changed", f"{shown} changed during the download: it starts "
                              "over", "failed")
        if resp.status not in (200, 206) or (resp.status == 206 and not offset):
            raise UpdateError("http", f"{shown}: the server answered HTTP {resp.status} "
                              f"{resp.reason}", "failed")
        if resp.status == 200:
            offset = 0  # a new file, or a server without ranges: from the start
        total = _total(resp, offset)
        if resp.status == 206 and total is None:
            raise UpdateError("http", f"{shown}: the server resumed at another byte",
                              "failed")
        if total is not None and total > max_size:
            raise UpdateError("too big", f"the bundle is {total} bytes, more than "
                              f"update.max_size ({max_size})", "refused")
        free = _free(folder)
        need = (total if total is not None else max_size) - offset + SPARE
        if free is not None and free < need:
            raise UpdateError("no space", f"{folder} has {free >> 20} MiB free, the bundle "
                              f"needs {need >> 20} MiB", "failed")
        etag = resp.getheader("ETag") or ""
        modified = resp.getheader("Last-Modified") or ""
        meta = {"url": url_digest(url), "etag": etag, "last_modified": modified,
                "durable": offset, "total": total}
        size = _receive(resp, r.conn, folder, offset, max_size, meta)
        if total is not None and size != total:
            raise UpdateError("cut short", f"{shown}: {size} of {total} bytes arrived "
                              "(what arrived is kept and resumed)", "failed")
        os.replace(folder / PART, folder / DONE)
        # kept until the install is over (discard): a power cut before then reuses the file
        _save_meta(folder, {"url": url_digest(url), "etag": etag, "last_modified": modified,
                            "complete": size})
        _sync_dir(folder)
        return Fetched(folder / DONE, size, etag, modified, shown_url(r.url))
    finally:
        r.close()


def _receive(resp: http.client.HTTPResponse, conn: http.client.HTTPSConnection, folder: Path,
             offset: int, max_size: int, meta: dict[str, object]) -> int:
    """Append the body to the .part, fsync'ing every SYNC_EVERY bytes and recording how much
    is safely on disk (a power cut resumes from there); returns the size reached. A network
    failure keeps what arrived (fsync'ed and recorded); a bundle over the cap is deleted."""
    resumable = bool(meta["etag"] or meta["last_modified"])
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (0 if offset else os.O_TRUNC)
    fd = os.open(folder / PART, flags, 0o600)
    size = synced = offset

    def record() -> None:
        nonlocal synced
        os.fsync(fd)
        synced = size
        if resumable:
            _save_meta(folder, {**meta, "durable": size})

    try:
        os.lseek(fd, offset, os.SEEK_SET)
        record()
        while True:
            if conn.sock is not None:
                conn.sock.settimeout(TIMEOUT)
            chunk = resp.read1(CHUNK)
            if not chunk:
                break
            if size + len(chunk) > max_size:
                raise UpdateError("too big", f"the bundle is larger than update.max_size "
                                  f"({max_size} bytes)", "refused")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            size += len(chunk)
            if size - synced >= SYNC_EVERY:
                record()
        record()
        return size
    except UpdateError:
        os.close(fd)
        fd = -1
        discard(folder)
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            record()
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def _free(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
