"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760).

Owns challenge parsing, the MD5 / SHA-256 (and -sess) response computation, qop=auth with
nonce counting, and the choice of the strongest challenge offered. Never logs or returns the
password. Knows nothing about transactions or sockets.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from .errors import RemoteProtocolError
from .headers import parse_auth_params, quote

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_PREFERENCE = ("SHA-256", "SHA-256-SESS", "MD5", "MD5-SESS")


@dataclass(frozen=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False  # Proxy-Authenticate (407) rather than WWW-Authenticate (401)

    @property
    def supported(self) -> bool:
        return self.algorithm in _PREFERENCE and (not self.qop or "auth" in self.qop)


def parse_challenge(value: str, proxy: bool = False) -> Challenge:
    scheme, params = parse_auth_params(value)
    if scheme != "digest":
        raise RemoteProtocolError(f"unsupported authentication scheme {scheme!r}")
    if "realm" not in params or "nonce" not in params:
        raise RemoteProtocolError("digest challenge without realm or nonce")
    for name, text in params.items():
        _check_param(name, text)
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params["realm"], nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5").upper(), qop=qop,
        opaque=params.get("opaque"), stale=params.get("stale", "").lower() == "true",
        proxy=proxy)


_MAX_PARAM = 1024


def _check_param(name: str, text: str) -> None:
    """Values we hash and echo back must be valid UTF-8 (the message is decoded with
    surrogateescape), printable and of sane length; otherwise the challenge is unusable."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RemoteProtocolError(f"digest {name} is not UTF-8") from None
    if len(text) > _MAX_PARAM or any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise RemoteProtocolError(f"digest {name} too long or with control characters")


def best_challenge(values: list[str], proxy: bool = False) -> Challenge:
    """The strongest challenge we support among several (RFC 8760 §2.4)."""
    found = []
    for value in values:
        try:
            ch = parse_challenge(value, proxy)
        except RemoteProtocolError:
            continue
        if ch.supported:
            found.append(ch)
    if not found:
        raise RemoteProtocolError("no supported digest challenge offered")
    return min(found, key=lambda c: _PREFERENCE.index(c.algorithm))


def digest_response(*, algorithm: str, username: str, realm: str, password: str, method: str,
                    uri: str, nonce: str, nc: str | None = None, cnonce: str | None = None,
                    qop: str | None = None) -> str:
    """The ``response`` value of RFC 7616 §3.4.1 (qop=auth or none)."""
    base = algorithm.upper().removesuffix("-SESS")
    try:
        hfunc = _HASHES[base]
    except KeyError as exc:
        raise RemoteProtocolError(f"unsupported digest algorithm {algorithm!r}") from exc

    def h(text: str) -> str:
        return hfunc(text.encode("utf-8")).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return h(f"{ha1}:{nonce}:{ha2}")


class DigestClient:
    """Answers challenges for one set of credentials, counting nonce uses (nc)."""

    def __init__(self, username: str, password: str,
                 cnonce: Callable[[], str] = lambda: secrets.token_hex(8)) -> None:
        self.username = username
        self._password = password
        self._cnonce = cnonce
        self._nc: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"DigestClient(username={self.username!r}, password=<hidden>)"

    def authorization(self, challenge: Challenge, method: str, uri: str) -> tuple[str, str]:
        """Return (header name, header value) answering ``challenge`` for this request."""
        qop = "auth" if "auth" in challenge.qop else None
        parts = [f"Digest username={quote(self.username)}", f"realm={quote(challenge.realm)}",
                 f"nonce={quote(challenge.nonce)}", f"uri={quote(uri)}"]
        nc = cnonce = None
        if qop or challenge.algorithm.endswith("-SESS"):
            cnonce = self._cnonce()
        if qop:
            count = self._nc.get(challenge.nonce, 0) + 1
            self._nc[challenge.nonce] = count
            nc = f"{count:08x}"
        response = digest_response(
            algorithm=challenge.algorithm, username=self.username, realm=challenge.realm,
            password=self._password, method=method, uri=uri, nonce=challenge.nonce, nc=nc,
            cnonce=cnonce, qop=qop)
        parts.append(f"response={quote(response)}")
        parts.append(f"algorithm={challenge.algorithm}")
        if cnonce:
            parts.append(f"cnonce={quote(cnonce)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={quote(challenge.opaque)}")
        if qop:
            parts += [f"qop={qop}", f"nc={nc}"]
        name = "Proxy-Authorization" if challenge.proxy else "Authorization"
        return name, ", ".join(parts)
