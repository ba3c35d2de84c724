"""Provisioning by MAC: which configuration the box runs, from its boot YAML and the documents a
provisioning server hands out.

Owns the decisions, without I/O: this box's URL (``{mac}`` substituted; from the card, or from
DHCP option 43 when the card says ``url: dhcp``), where the signature and the cache live, a
fetched or cached document validated exactly like the boot YAML
(``firmware.config.parse_provisioned``: the same one-line errors with the line), the last good
document kept when a new one is refused (the boot YAML as the floor), whether a changed
configuration waits to be applied and whether the applied one still has to be kept on disk, the
retry delay, and the status report (the URL without its query, where it came from, the cache's
place, times, results, the applied document's hash; never a value from a document). Fetching,
checking signatures, reading DHCP leases, the MAC and the cache file are
``firmware.provisioning_io``; when to swap the running App is ``firmware.runner``. Knows
nothing about SIP, sockets or GPIO.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config import (
    BootConfig,
    Config,
    ConfigError,
    ControlSettings,
    https_url_problem,
    parse_provisioned,
)

log = logging.getLogger("intercom.provisioning")

CACHE_NAME = "provisioned.yaml"
DATA_CACHE = "provisioning"  # under the data partition's folder (provisioning_io.DATA)


def url_for(template: str, mac: str) -> str:
    """The box's URL: ``{mac}`` -> 12 lowercase hex digits (the Alcatel ``<MAC>`` pattern)."""
    return template.replace("{mac}", mac)


def shown_url(url: str) -> str:
    """The URL as logs and status show it: scheme, host and path (a query may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


def digest(body: bytes) -> str:
    """The document's identity in status: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(body).hexdigest()[:16]


def signature_url(url: str) -> str:
    """Where the detached signature of ``url`` is: ``.sig`` appended to its path (a query
    stays the query)."""
    parts = urlsplit(url)
    return parts._replace(path=parts.path + ".sig").geturl()


def url_from_option43(value: bytes) -> str:
    """The provisioning URL template in DHCP option 43: the whole option as text, or, when it is
    encapsulated (code, length, data ...), its sub-option 1. Only an https:// URL is taken (the
    pinned CA still decides whether its server is believed). Without ``{mac}`` a URL ending in
    "/" (or with no path) is a folder: ``{mac}.yaml`` is appended; another URL is one file for
    every box. ValueError (one line) otherwise."""
    text = _option_text(value)
    if text is None:
        sub = _sub_options(value).get(1)
        text = _option_text(sub) if sub is not None else None
    if text is None:
        raise ValueError("DHCP option 43 holds no https:// URL (as text or as sub-option 1)")
    parts = urlsplit(text)
    if "{mac}" not in text and (not parts.path or parts.path.endswith("/")):
        text = parts._replace(path=(parts.path or "/") + "{mac}.yaml").geturl()
    if problem := https_url_problem(text):
        raise ValueError(f"the URL in DHCP option 43 {problem}")
    return text


def dhcp_template(options: list[tuple[str, bytes]]) -> str:
    """The URL template of the first lease (lowest interface index) whose option 43 holds a
    usable URL; ValueError (one line) when none does."""
    if not options:
        raise ValueError("provisioning.url is dhcp, but no DHCP lease carries option 43 (the "
                         "DHCP server must send it; the box asks for it with RequestOptions=43)")
    problems = []
    for _, value in options:
        try:
            return url_from_option43(value)
        except ValueError as exc:
            problems.append(str(exc))
    raise ValueError(f"provisioning.url is dhcp: {problems[0]}")


def _option_text(value: bytes) -> str | None:
    raw = value.rstrip(b"\0")  # some servers end a text option with a NUL
    if raw.startswith(b"https://") and all(0x21 <= b < 0x7F for b in raw):
        return raw.decode("ascii")
    return None


def _sub_options(value: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    i = 0
    while i < len(value):
        code = value[i]
        if code == 0:  # pad
            i += 1
            continue
        if code == 255 or i + 1 >= len(value):  # end
            break
        length = value[i + 1]
        found.setdefault(code, value[i + 2:i + 2 + length])
        i += 2 + length
    return found


def cache_dir(boot: BootConfig, data: Path | None = None) -> tuple[Path, str]:
    """(folder, where) of the cache: ``provisioning.cache_dir``; else ``provisioning/`` in
    ``data`` (the data partition's folder, when it is usable: kept over reboots and updates);
    else ``provisioning/`` next to the control socket (the runtime directory: RAM on the image,
    kept over a service restart, not over a reboot)."""
    if boot.provisioning.cache_dir:
        return Path(boot.provisioning.cache_dir), "provisioning.cache_dir"
    if data is not None:
        return data / DATA_CACHE, "data partition"
    control: dict[str, Any] = boot.base["control"] \
        if isinstance(boot.base.get("control"), dict) else {}
    return (Path(str(control.get("socket") or ControlSettings().socket)).parent
            / "provisioning", "RAM")


class Provisioner:
    """The last good provisioned document over the boot YAML, and what the server said last."""

    def __init__(self, boot: BootConfig) -> None:
        self.boot = boot
        self.good: Config | None = None  # the last good provisioned configuration
        self.good_body: bytes | None = None
        self.good_hash: str | None = None
        self.good_sig: bytes | None = None  # its detached signature (provisioning.signing_cert)
        self.source = "boot"  # where the good configuration came from: boot | cache | server
        self.applied_hash: str | None = None  # what the running App uses (None: the boot YAML)
        self.failed_hash: str | None = None  # valid, but the intercom could not start with it
        # the good document before the one waiting to be applied: the way back if it fails
        self._previous: tuple[Config | None, bytes | None, str | None, bytes | None, str] = \
            (None, None, None, None, "boot")
        self.url: str | None = None  # with {mac} substituted, once the MAC is known
        self.url_from = "dhcp option 43" if boot.provisioning.url == "dhcp" else "card"
        self.cache_dir: Path | None = None  # where the applied document is kept
        self.cache_where: str | None = None  # data partition | RAM | provisioning.cache_dir
        self.kept_hash: str | None = None  # the document the cache file holds
        self.mac: str | None = boot.provisioning.mac
        self.last_fetch: float | None = None  # UNIX time of the last attempt
        self.last_good_fetch: float | None = None
        self.last_result: str | None = None  # ok | unchanged | refused | failed
        self.last_error: str | None = None
        self.fetches = 0
        self.refused = 0
        self.failures = 0  # failed attempts in a row: the retry backs off
        # (result, document hash, reason) of what happened to a document: the running App's
        # events (firmware.runner points it at the App in use); None: nobody listens
        self.report: Callable[[str, str | None, str | None], None] | None = None
        self._refusal_told: str | None = None  # a refusal is told once, not at every fetch

    # ----------------------------------------------------------------- what to run
    def config(self) -> Config | None:
        """What the box should run: the last good provisioned configuration, else the boot
        YAML's (None: the boot YAML is incomplete and nothing good arrived yet)."""
        return self.good or self.boot.config

    def pending(self) -> Config | None:
        """A good configuration the running App does not use yet (never one that failed)."""
        if self.good is None or self.good_hash in (self.applied_hash, self.failed_hash):
            return None
        return self.good

    def applied(self, cfg: Config) -> None:
        """The App now runs ``cfg``."""
        before, self.applied_hash = self.applied_hash, self.good_hash if cfg is self.good else None
        if self.applied_hash is not None and self.applied_hash != before and self.report:
            self.report("applied", self.applied_hash, None)

    def to_keep(self) -> tuple[bytes, bytes | None] | None:
        """(document, signature) the cache file should hold and does not yet: the applied one
        (kept only once the intercom started with it, so the cache is never a document that
        cannot run)."""
        if self.applied_hash is None or self.applied_hash == self.kept_hash \
                or self.good_body is None or self.good_hash != self.applied_hash:
            return None
        return self.good_body, self.good_sig

    def kept(self, body: bytes) -> None:
        """The cache file now holds ``body``."""
        self.kept_hash = digest(body)

    def start_failed(self, cfg: Config, why: str) -> None:
        """The intercom could not start with ``cfg``: never try that document again (a changed
        one is tried), fall back to the boot YAML."""
        failed = self.good_hash if cfg is self.good else None
        if cfg is self.good and self.good is not None:
            self.failed_hash = self.good_hash
            self.good, self.good_body, self.good_hash, self.good_sig, self.source = \
                self._previous
            self._previous = (None, None, None, None, "boot")
        self.last_result = "refused"
        self.last_error = f"cannot start with the provisioned configuration: {why}"
        log.error("%s: keeping the previous configuration", self.last_error)
        if self.report:
            self.report("start_failed", failed, self.last_error)

    # ----------------------------------------------------------------- documents in
    def label(self) -> str:
        return shown_url(self.url) if self.url else "provisioning.url"

    def offer(self, body: bytes, source: str, when: float,
              signature: bytes | None = None) -> bool:
        """A document from the server (``source`` "server") or the cache ("cache"), its
        signature already checked by the caller when one is asked for. True when it is good and
        differs from what runs; a refused one changes nothing but the status."""
        name = self.label() if source == "server" else f"cached {self.label()}"
        if source == "server":
            self.fetches += 1
            self.last_fetch = when
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse(source, f"{name}: not UTF-8 text")
        if "\0" in text:
            return self._refuse(source, f"{name}: not a YAML text (NUL byte)")
        try:
            cfg = parse_provisioned(text, name, self.boot)
        except ConfigError as exc:
            return self._refuse(source, str(exc))
        h = digest(body)
        if source == "server":
            self.failures = 0
            self.last_good_fetch = when
            self.last_error = None
            self._refusal_told = None
            self.last_result = "unchanged" if h == self.good_hash else "ok"
        if source == "cache":
            self.kept_hash = h
        if h == self.good_hash:
            return False
        if h == self.failed_hash:
            self.last_result = "refused"
            self.last_error = "the same document the intercom could not start with"
            return False
        if self.good_hash == self.applied_hash:  # what runs stays the way back
            self._previous = (self.good, self.good_body, self.good_hash, self.good_sig,
                              self.source)
        self.good, self.good_body, self.good_hash, self.good_sig, self.source = \
            cfg, body, h, signature, source
        log.info("provisioned configuration %s from %s%s", h,
                 "the server" if source == "server" else "the cache",
                 "" if h == self.applied_hash else ": applied at the next idle moment")
        return h != self.applied_hash

    def fetch_failed(self, why: str, when: float) -> None:
        """The server could not be asked or did not answer with a document."""
        self.fetches += 1
        self.failures += 1
        self.last_fetch = when
        self.last_result = "failed"
        self.last_error = why
        kept = "the provisioned configuration" if self.good else "the boot YAML"
        log.warning("provisioning: %s (keeping %s)", why, kept)

    def refuse(self, why: str, when: float) -> None:
        """The server answered, but what it sent is refused before parsing (its signature)."""
        self.fetches += 1
        self.last_fetch = when
        self._refuse("server", why)

    def _refuse(self, source: str, why: str) -> bool:
        if source == "server":
            self.refused += 1
            self.failures += 1
            self.last_result = "refused"
            self.last_error = why
            if self.report and why != self._refusal_told:
                self.report("refused", None, why)
            self._refusal_told = why
        kept = "the last good provisioned configuration" if self.good else "the boot YAML"
        log.error("provisioned document refused: %s (keeping %s)", why, kept)
        return False

    def next_delay(self) -> float:
        """Seconds to the next fetch: the interval after a good answer, else the retry delay
        doubling up to the interval."""
        p = self.boot.provisioning
        if self.failures == 0 and self.last_good_fetch is not None:
            return p.interval
        return min(p.interval, p.retry * 2 ** max(0, self.failures - 1))

    # ----------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """For ``intercom status``: no document value ever appears here (they hold secrets)."""
        return {
            "url": self.label() if self.boot.provisioning.url else None,
            "url_from": self.url_from,
            "signed": bool(self.boot.provisioning.signing_cert),
            "cache": self.cache_where,
            "cache_dir": str(self.cache_dir) if self.cache_dir else None,
            "mac": self.mac,
            "source": self.source,
            "applied": self.applied_hash,
            "pending": h if (h := self.good_hash) != self.applied_hash and self.good else None,
            "last_fetch": self.last_fetch,
            "last_good_fetch": self.last_good_fetch,
            "last_result": self.last_result,
            "last_error": self.last_error,
            "fetches": self.fetches,
            "refused": self.refused,
        }
