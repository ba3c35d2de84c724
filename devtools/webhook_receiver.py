"""A webhook receiver on loopback for tests: an HTTPS server (the test CA's certificate) that
checks each POST's HMAC-SHA256 signature and timestamp the way README tells a receiver to
(written here on its own, not with the firmware's code), records the events, and can be told
to fail the next N requests (500) to exercise the sender's retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .certificate import WebCertificate

REPLAY_WINDOW = 300


class WebhookReceiver:
    def __init__(self, cert: WebCertificate, secret: str) -> None:
        self.secret = secret.encode()
        self.events: list[dict[str, Any]] = []
        self.rejected: list[str] = []  # why a request was refused
        self.fail_next = 0
        self.attempts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                code = receiver._take(self.headers, body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert.cert), str(cert.key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/hooks/door"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _take(self, headers: Any, body: bytes) -> int:
        with self._lock:
            self.attempts += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return 500
            stamp = headers.get("X-Intercom-Timestamp", "")
            given = headers.get("X-Intercom-Signature", "")
            mac = hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256)
            if not stamp.isdigit() or abs(time.time() - int(stamp)) > REPLAY_WINDOW:
                self.rejected.append(f"timestamp {stamp!r}")
                return 401
            if not hmac.compare_digest("sha256=" + mac.hexdigest(), given):
                self.rejected.append("signature")
                return 401
            self.events.append(json.loads(body))
            return 204

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kinds(self) -> list[str]:
        with self._lock:
            return [e["kind"] for e in self.events]
