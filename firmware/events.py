"""Small frozen event records shared between layers (SIP user agent -> application).

Owns only the shapes of what happened and the agreed media parameters; no behaviour. Imports
nothing from the project: every other layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SrtpParams:
    """Agreed SDES-SRTP: the suite and both master keys (16-byte key || 14-byte salt).

    ``local_key`` protects what we send, ``remote_key`` checks what we receive. Neither is
    ever shown by repr() (so not in logs or status either).
    """

    suite: str
    local_key: bytes = field(repr=False)
    remote_key: bytes = field(repr=False)


@dataclass(frozen=True)
class MediaParams:
    """What both sides agreed for the audio stream (from SDP), ready for the media core."""

    remote_addr: str
    remote_port: int
    payload_type: int
    codec: str
    dtmf_payload_type: int | None
    ptime: int
    direction: str  # our direction: sendrecv, sendonly, recvonly, inactive
    srtp: SrtpParams | None = None  # None: plain RTP


@dataclass(frozen=True)
class Registered:
    expires: int
    contact: str


@dataclass(frozen=True)
class RegistrationFailed:
    """Registration did not succeed; ``retry_in`` seconds until the next attempt."""

    reason: str
    status: int | None
    retry_in: float


@dataclass(frozen=True)
class RegistrarMoved:
    """The registration moved to another server (``target``: address:port) — a failover, or
    back to the preferred one (``preferred``); ``reason`` says why."""

    target: str
    name: str
    reason: str
    preferred: bool


@dataclass(frozen=True)
class Unregistered:
    reason: str


@dataclass(frozen=True)
class IncomingCall:
    call_id: str
    remote: str
    display: str | None


@dataclass(frozen=True)
class BusyRefused:
    """An INVITE arrived while a call was up: the user agent answered 486 Busy Here itself
    (one call at a time); told so the building hears of the caller who was turned away."""

    remote: str
    display: str | None


@dataclass(frozen=True)
class CallRinging:
    call_id: str
    status: int


@dataclass(frozen=True)
class CallAnswered:
    call_id: str
    media: MediaParams | None


@dataclass(frozen=True)
class MediaUpdated:
    call_id: str
    media: MediaParams


@dataclass(frozen=True)
class CallEnded:
    call_id: str
    reason: str
    status: int | None = None
    by_remote: bool = False


@dataclass(frozen=True)
class DtmfReceived:
    """A key from SIP INFO; repr() never shows it (it may be part of the door code)."""

    call_id: str
    digit: str = field(repr=False)


@dataclass(frozen=True)
class SourceRefused:
    """Messages from a source that is neither the registrar nor a trusted source were refused.

    Reported at most once a minute per source; ``count`` = refused since the last report."""

    host: str
    port: int
    what: str  # the first line's method or "response"
    count: int
    policy: str  # "drop" | "403"


SipEvent = (Registered | RegistrationFailed | RegistrarMoved | Unregistered | IncomingCall
            | BusyRefused | CallRinging | CallAnswered | MediaUpdated | CallEnded | DtmfReceived
            | SourceRefused)
