"""SDES key transport for SRTP (RFC 4568): the ``a=crypto`` attribute and its offer/answer.

Owns what a crypto line looks like (``<tag> <suite> inline:<base64 key||salt>[|lifetime]``),
the suites the box speaks (AES_CM_128_HMAC_SHA1_80 and _32), fresh master keys from the
operating system's CSPRNG, the choice of a line from an offer, the check of the answer to
ours, and the ``media.srtp`` policy (off | optional | required) that decides when a missing
or unusable crypto line refuses the call (488). Lines it does not support (MKI, several keys,
session parameters, short lifetimes, other suites) are skipped, never half-used.

A key never appears in repr(), in an error message or, through ``redact``, in a SIP log.
Knows nothing about RTP, libsrtp, sockets or the rest of SDP.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field

from ..events import SrtpParams
from .errors import RemoteProtocolError

# in our order of preference: the 80-bit tag first (RFC 4568 §6.2)
SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
POLICIES = ("off", "optional", "required")
KEY_LENGTH = 30  # 16-byte master key || 14-byte master salt
MIN_LIFETIME = 2**20  # packets; we never re-key in a call (2^20 is 5.8 h at 50 packets/s)
_ASCII_DIGITS = re.compile(r"[0-9]{1,9}")
_INLINE = re.compile(rb"(inline:)[^\s|;]*")
_BENIGN_SESSION_PARAMS = ("WSH=",)  # window-size hint: ours is larger anyway


class SdesError(ValueError):
    """A crypto line we cannot use; the message never contains key material."""


@dataclass(frozen=True)
class Crypto:
    """One parsed ``a=crypto`` value."""

    tag: int
    suite: str
    key: bytes = field(repr=False)

    def value(self) -> str:
        """The attribute value for SDP (it carries the key: never log it)."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"


def parse_crypto(value: str | None) -> Crypto:
    """Parse one ``a=crypto`` value; SdesError if it is malformed or unsupported."""
    parts = (value or "").split()
    if len(parts) < 3:
        raise SdesError("a=crypto needs a tag, a suite and key parameters")
    tag_text, suite, key_params = parts[0], parts[1], parts[2]
    if not _ASCII_DIGITS.fullmatch(tag_text):
        raise SdesError("a=crypto tag must be 1 to 9 ASCII digits")
    if suite not in SUITES:
        raise SdesError(f"unsupported SRTP suite {suite[:40]!r}")
    for param in parts[3:]:
        if not param.startswith(_BENIGN_SESSION_PARAMS):
            raise SdesError(f"unsupported SRTP session parameter {param.split('=')[0][:30]!r}")
    if ";" in key_params:
        raise SdesError("several master keys in one a=crypto line are not supported")
    method, _, rest = key_params.partition(":")
    if method != "inline":
        raise SdesError("a=crypto key method must be inline")
    key_text, *extras = rest.split("|")
    try:
        key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        raise SdesError("a=crypto key is not valid base64") from None
    if len(key) != KEY_LENGTH:
        raise SdesError(f"a=crypto key||salt must be {KEY_LENGTH} bytes, not {len(key)}")
    for extra in extras:
        if ":" in extra:
            raise SdesError("a=crypto MKI is not supported")
        if _lifetime(extra) < MIN_LIFETIME:
            raise SdesError("a=crypto key lifetime is shorter than 2^20 packets")
    return Crypto(int(tag_text), suite, key)


def _lifetime(text: str) -> int:
    if text.startswith("2^") and _ASCII_DIGITS.fullmatch(text[2:]) and int(text[2:]) <= 64:
        return 2 ** int(text[2:])
    if _ASCII_DIGITS.fullmatch(text):
        return int(text)
    raise SdesError("a=crypto key lifetime is malformed")


@dataclass(frozen=True)
class LocalKeys:
    """Our master keys for one call: one fresh key per offered suite, tag = position + 1."""

    keys: tuple[tuple[str, bytes], ...] = field(repr=False)

    @classmethod
    def generate(cls, suites: tuple[str, ...] = SUITES) -> LocalKeys:
        return cls(tuple((suite, secrets.token_bytes(KEY_LENGTH)) for suite in suites))

    def offer(self) -> list[Crypto]:
        return [Crypto(i + 1, suite, key) for i, (suite, key) in enumerate(self.keys)]

    def key_for(self, suite: str) -> bytes:
        return dict(self.keys)[suite]


def offer_values(keys: LocalKeys) -> list[str]:
    """The ``a=crypto`` values of our offer."""
    return [c.value() for c in keys.offer()]


def answer(proto: str, offered: list[str | None], policy: str,
           keys: LocalKeys) -> tuple[SrtpParams | None, str | None]:
    """Pick the first usable crypto line of an offer's audio stream.

    Returns the agreed parameters and our ``a=crypto`` value for the answer, or (None, None)
    for plain RTP; RemoteProtocolError 488 when the policy or the offer's profile forbids that.
    """
    if policy == "off":
        return None, None
    for value in offered:
        try:
            theirs = parse_crypto(value)
        except SdesError:
            continue
        ours = Crypto(theirs.tag, theirs.suite, keys.key_for(theirs.suite))
        return SrtpParams(theirs.suite, ours.key, theirs.key), ours.value()
    if proto.upper() == "RTP/SAVP":
        raise RemoteProtocolError("the offer requires SRTP but none of its a=crypto lines is "
                                  "usable (we support " + ", ".join(SUITES) + ")", 488)
    if policy == "required":
        raise RemoteProtocolError("SRTP is required (media.srtp) but the offer has no usable "
                                  "a=crypto line", 488)
    return None, None


def accept(proto: str, answered: list[str | None], policy: str,
           keys: LocalKeys) -> SrtpParams | None:
    """Check the answer to our offer: one crypto line echoing a tag and suite we offered."""
    if policy == "off":
        return None
    if not answered:
        if policy == "required" or proto.upper() == "RTP/SAVP":
            raise RemoteProtocolError("SRTP is required but the answer has no a=crypto line",
                                      488)
        return None
    if len(answered) != 1:
        raise RemoteProtocolError("the answer has more than one a=crypto line", 488)
    try:
        theirs = parse_crypto(answered[0])
    except SdesError as exc:
        raise RemoteProtocolError(f"unusable a=crypto in the answer: {exc}", 488) from None
    offered = {c.tag: c for c in keys.offer()}
    ours = offered.get(theirs.tag)
    if ours is None or ours.suite != theirs.suite:
        raise RemoteProtocolError("the answer's a=crypto does not match a line we offered",
                                  488)
    return SrtpParams(theirs.suite, ours.key, theirs.key)


def redact(data: bytes) -> bytes:
    """A SIP message or SDP body with every inline key replaced by <redacted>."""
    return _INLINE.sub(rb"\1<redacted>", data)
