"""Session timers (RFC 4028): Session-Expires / Min-SE, the refresher, and when a session that
nobody refreshes must end.

Owns the grammar of the two headers, the UAS choice (copy the interval, pick the refresher, 422
below our Min-SE), the UAC reading of a 2xx, and the deadlines of one negotiated interval
(refresh at half of it when we refresh; give up ``min(32, SE/3)`` before it expires when the
peer does). Knows nothing about dialogs, transactions, SDP, sockets or clocks (``now`` comes in).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RemoteProtocolError
from .headers import MAX_INT32, is_ascii_digits, parse_params
from .message import Request, Response

MIN_SE = 90  # RFC 4028 §4: no Min-SE may be lower


class IntervalTooSmallError(RemoteProtocolError):
    """The offered Session-Expires is below our Min-SE: answer 422 with ``Min-SE: min_se``."""

    def __init__(self, min_se: int) -> None:
        super().__init__(f"Session-Expires below Min-SE {min_se}", 422)
        self.min_se = min_se


@dataclass(frozen=True)
class SessionTimer:
    """One negotiated interval, counted from the last successful refresh."""

    interval: int
    we_refresh: bool
    refreshed_at: float

    @property
    def refresh_at(self) -> float | None:
        """When we send the next refresh (RFC 4028 §10: half the interval); None: the peer
        refreshes."""
        return self.refreshed_at + self.interval / 2 if self.we_refresh else None

    @property
    def expires_at(self) -> float:
        """When the session is given up for lost: BYE, end (§10). Also bounds a refresh of
        ours that neither succeeds nor fails."""
        return self.refreshed_at + self.interval - min(32.0, self.interval / 3)


def parse_session_expires(value: str) -> tuple[int, str | None]:
    """``1800;refresher=uac`` -> (1800, "uac"). Malformed: RemoteProtocolError (400)."""
    number, _, params = value.partition(";")
    number = number.strip()
    if not is_ascii_digits(number, 10) or int(number) > MAX_INT32 or int(number) == 0:
        raise RemoteProtocolError(f"malformed Session-Expires {value[:40]!r}")
    refresher = parse_params(params, "Session-Expires").get("refresher")
    if refresher is not None:
        refresher = refresher.lower()
        if refresher not in ("uac", "uas"):
            raise RemoteProtocolError(f"malformed Session-Expires {value[:40]!r}")
    return int(number), refresher


def parse_min_se(value: str | None) -> int | None:
    """The Min-SE value (its parameters ignored); None when absent. Malformed: 400."""
    if value is None:
        return None
    number = value.partition(";")[0].strip()
    if not is_ascii_digits(number, 10) or int(number) > MAX_INT32:
        raise RemoteProtocolError(f"malformed Min-SE {value[:40]!r}")
    return int(number)


def supports_timer(msg: Request | Response) -> bool:
    """The sender lists ``timer`` in Supported (or Require)."""
    return any(v.strip().lower() == "timer"
               for name in ("Supported", "Require") for v in msg.headers.get_all(name))


def uas_negotiate(req: Request, min_se: int, now: float, current: SessionTimer | None
                  ) -> tuple[SessionTimer | None, list[tuple[str, str]]]:
    """An INVITE (initial or re-INVITE) we are about to accept: the timer it sets up and the
    headers our 2xx carries (RFC 4028 §9).

    Without Session-Expires no timer is set up, unless one runs already (``current``): then we
    keep it with ourselves as refresher, so that a re-INVITE cannot switch it off. Raises
    IntervalTooSmallError (422) when the peer supports timers and offers less than our Min-SE, and
    RemoteProtocolError (400) for malformed headers."""
    supported = supports_timer(req)
    value = req.headers.get("Session-Expires")
    floor = max(min_se, MIN_SE, parse_min_se(req.headers.get("Min-SE")) or 0)
    if value is None:
        if current is None:
            return None, []
        interval, refresher = max(current.interval, floor), "uas"
    else:
        interval, asked = parse_session_expires(value)
        refresher = asked or "uac"  # none named and the PBX supports timers: it refreshes
        if interval < floor:
            if supported:
                raise IntervalTooSmallError(floor)
            interval = floor  # a proxy asked for it; we refresh, so a longer one is ours to take
        if not supported:
            refresher = "uas"  # the caller cannot refresh what it does not know (§9 table)
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if supported:
        headers.append(("Require", "timer"))
    return SessionTimer(interval, refresher == "uas", now), headers


def uac_negotiate(resp: Response, min_se: int, now: float) -> SessionTimer | None:
    """The 2xx to an INVITE we sent: the timer the answerer set up, if any (RFC 4028 §7.2).
    A missing refresher makes us refresh; an interval below the floor is raised to it."""
    value = resp.headers.get("Session-Expires")
    if value is None:
        return None
    interval, refresher = parse_session_expires(value)
    return SessionTimer(max(interval, min_se, MIN_SE), refresher != "uas", now)


def refresh_headers(timer: SessionTimer, min_se: int) -> list[tuple[str, str]]:
    """What a refresh re-INVITE of ours carries: we are its UAC and stay the refresher."""
    return [("Supported", "timer"),
            ("Session-Expires", f"{timer.interval};refresher=uac"),
            ("Min-SE", str(max(min_se, MIN_SE)))]
