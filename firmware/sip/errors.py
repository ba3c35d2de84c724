"""Protocol errors raised by the SIP core.

Owns the split between what the peer did wrong (RemoteProtocolError, answered with a status
code or dropped and counted) and what our own caller did wrong (LocalProtocolError, a bug or a
misuse of the API). Knows nothing about sockets or the application.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A SIP rule was broken. ``status`` is the response code a UAS should send (if any)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or not acceptable."""


class LocalProtocolError(ProtocolError):
    """Our own caller asked for something the protocol does not allow in this state."""
