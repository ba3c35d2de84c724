"""A static HTTPS file server for the image tests: the provisioning server and the update server
a building would run (any static web server does), started inside a test's network namespace,
where the QEMU guest reaches it as 10.0.2.2.

Owns: serving one folder's files over TLS (GET and HEAD, ETag from size and mtime, Range for a
resumed download), and a log of each request (one JSON line: method, path, status, bytes sent) that
the tests read. Files are swapped by the test with an atomic rename. Knows nothing about the box.

    python -m devtools.https_files FOLDER --cert CERT --key KEY --port PORT --log LOG
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def serve(folder: Path, cert: Path, key: Path, port: int, log: Path) -> None:
    lock = threading.Lock()

    def record(entry: dict) -> None:
        with lock, open(log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    class Handler(BaseHTTPRequestHandler):
        def _file(self) -> Path | None:
            name = self.path.split("?", 1)[0].lstrip("/")
            path = (folder / name).resolve()
            if folder.resolve() not in path.parents or not path.is_file():
                return None
            return path

        def _send(self, body: bool) -> None:
            path = self._file()
            if path is None:
                self.send_error(404)
                record({"method": self.command, "path": self.path, "status": 404, "sent": 0})
                return
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
                start, end, status = 0, st.st_size, 200
                wanted = self.headers.get("Range", "")
                if wanted.startswith("bytes=") and "," not in wanted:
                    first, _, last = wanted[6:].partition("-")
                    if first.isdigit() and int(first) < st.st_size:
                        start, status = int(first), 206
                        if last.isdigit():
                            end = min(st.st_size, int(last) + 1)
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    record({"method": self.command, "path": self.path, "status": 304, "sent": 0})
                    return
                self.send_response(status)
                self.send_header("Content-Length", str(end - start))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{st.st_size}")
                self.end_headers()
                sent = 0
                if body:
                    f.seek(start)
                    try:
                        while sent < end - start:
                            chunk = f.read(min(1 << 20, end - start - sent))
                            if not chunk:
                                break
                            self.wfile.write(chunk)
                            sent += len(chunk)
                    except OSError:
                        pass  # the client went away (a power cut in the test)
                record({"method": self.command, "path": self.path, "status": status,
                        "sent": sent})

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._send(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._send(body=False)

        def log_message(self, *args: object) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--cert", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", type=Path, required=True)
    a = p.parse_args()
    serve(a.folder, a.cert, a.key, a.port, a.log)


if __name__ == "__main__":
    main()
