"""Signed webhooks: every building event (not the retained state's changes) POSTed as JSON over
HTTPS to each configured URL, on a thread per URL.

The body is signed with HMAC-SHA256 over ``<timestamp>.<body>`` (the timestamp in UNIX seconds,
sent in ``X-Intercom-Timestamp``; the signature as ``X-Intercom-Signature: sha256=<hex>``); a
receiver recomputes it, refuses a timestamp more than ``REPLAY_WINDOW`` seconds from its
clock, and refuses a (``run``, ``seq``) pair it has seen. A 2xx answer delivers; anything else
(an error, a timeout, a redirect) is retried with backoff (1, 2, 4 ... s, ``webhooks.retries``
times, each attempt signed afresh), then dropped and counted. Each URL's queue is bounded
(``webhooks.queue``): the oldest event is dropped and counted, so a dead receiver costs neither
memory nor time on the event loop, nor delays another URL.

Owns the signing, the delivery and its counters; must not know what an event means. The
secret never reaches a log, the status or a header other than through the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections import deque
from typing import Any

from ..config import WebhookSettings
from .event import Event, Kind

log = logging.getLogger("intercom")

REPLAY_WINDOW = 300  # seconds: what a receiver should accept around its own clock
MAX_ANSWER = 65536  # bytes of the receiver's answer read (and ignored)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """What a receiver does (also the reference for README's Python snippet): the signature
    matches and the timestamp is inside the replay window."""
    timestamp = headers.get("X-Intercom-Timestamp", "")
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > REPLAY_WINDOW:
        return False
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected, headers.get("X-Intercom-Signature", ""))


class Webhook:
    """One URL: an Outbox consumer on the event loop, a thread that delivers."""

    def __init__(self, url: str, settings: WebhookSettings, name: str) -> None:
        self.url, self.settings, self.name = url, settings, name
        parts = urllib.parse.urlsplit(url)
        self._host, self._port = parts.hostname or "", parts.port or 443
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._context = ssl.create_default_context(cafile=settings.ca_file)
        self._queue: deque[bytes] = deque()
        self._ready = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self.error: str | None = None
        self.counters = {"delivered": 0, "dropped": 0, "failed": 0, "retries": 0}

    def __call__(self, event: Event) -> None:
        """The Outbox consumer: queue (dropping the oldest when full) and wake the thread."""
        if event.kind is Kind.STATE:
            return
        body = json.dumps({"box": self.name, **event.as_dict()}).encode()
        with self._ready:
            if len(self._queue) >= self.settings.queue:
                self._queue.popleft()
                self.counters["dropped"] += 1
            self._queue.append(body)
            self._ready.notify()

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        with self._ready:
            self._stop = True
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def report(self) -> dict[str, Any]:
        with self._ready:
            queued = len(self._queue)
        return {"url": self.url, "queued": queued, "error": self.error, **self.counters}

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stop:
                    self._ready.wait()
                if self._stop:
                    return
                body = self._queue.popleft()
            self._deliver(body)

    def _deliver(self, body: bytes) -> None:
        delay = 1.0
        for attempt in range(self.settings.retries + 1):
            problem = self._post(body)
            if problem is None:
                self.counters["delivered"] += 1
                if self.error is not None:
                    log.info("webhook %s: delivering again", self.url)
                self.error = None
                return
            if problem != self.error:
                log.warning("webhook %s: %s (retrying with backoff)", self.url, problem)
            self.error = problem
            if attempt < self.settings.retries:
                self.counters["retries"] += 1
                with self._ready:
                    if self._ready.wait_for(lambda: self._stop, delay):
                        return
                delay = min(delay * 2, 60.0)
        self.counters["failed"] += 1

    def _post(self, body: bytes) -> str | None:
        """One signed POST; None when the receiver took it, else why not."""
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": "intercom-firmware",
                   "X-Intercom-Timestamp": timestamp,
                   "X-Intercom-Signature": signature(self.settings.secret, timestamp, body)}
        conn = http.client.HTTPSConnection(self._host, self._port,
                                           timeout=self.settings.timeout, context=self._context)
        try:
            conn.request("POST", self._path, body, headers)
            answer = conn.getresponse()
            answer.read(MAX_ANSWER)
            if 200 <= answer.status < 300:
                return None
            return f"answered {answer.status} {answer.reason}"
        except ssl.SSLCertVerificationError as exc:
            return f"the receiver's certificate is not trusted: {exc.verify_message} " \
                "(webhooks.ca_file)"
        except (OSError, http.client.HTTPException) as exc:
            return f"cannot deliver: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
        finally:
            conn.close()
