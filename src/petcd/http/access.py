"""etcd's access controller settings for its client URLs (``--cors``, ``--host-whitelist``).

Kept apart from ``petcd.http.server`` so that a member can hold them without importing
aiohttp (0.4 s), which it does only at the first HTTP connection.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AccessPolicy:
    """etcd's access controller for its client URLs: ``--cors`` origins and
    ``--host-whitelist`` names; none, or ``*`` among them, allows all. With
    ``client_cert_auth`` (``--client-cert-auth``), a JSON gateway request over TLS whose client
    certificate has a common name is refused while auth is on (the gateway calls the member as
    no user, so the name would be ignored)."""

    cors: frozenset[str] = frozenset({"*"})
    hosts: frozenset[str] = frozenset({"*"})
    client_cert_auth: bool = False

    def origin_allowed(self, origin: str) -> bool:
        return not self.cors or "*" in self.cors or origin in self.cors

    def host_allowed(self, host: str) -> bool:
        return not self.hosts or "*" in self.hosts or host in self.hosts

    @classmethod
    def of(
        cls, cors: tuple[str, ...], hosts: tuple[str, ...], client_cert_auth: bool = False
    ) -> AccessPolicy:
        return cls(frozenset(cors), frozenset(hosts), client_cert_auth)
