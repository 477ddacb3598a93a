"""Named errors of petcd.peer.

Theory of operation
-------------------
Expected outcomes of the peer transport that a caller (or the transport itself) handles:
a malformed frame (``CodecError``), a refused handshake (``HandshakeRejectedError``), a peer
URL the transport cannot dial (``PeerUrlError``). Connection failures are not errors for the
caller: they are reported through ``report_unreachable`` / ``report_snapshot`` callbacks.
"""

from __future__ import annotations


class PeerError(Exception):
    """Base class of the peer transport's named errors."""


class CodecError(PeerError):
    """Bytes that are not a valid encoded message, frame or handshake."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"peer: malformed data: {reason}")
        self.reason = reason


class HandshakeRejectedError(PeerError):
    """The listener refused our handshake (cluster id mismatch, removed member, ...)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"peer: handshake rejected ({status}): {reason}")
        self.status = status
        self.reason = reason


class PeerUrlError(PeerError):
    """A peer URL that is not ``http://host:port`` or ``https://host:port``."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"peer: bad peer URL {url!r}: {reason}")
        self.url = url
        self.reason = reason
