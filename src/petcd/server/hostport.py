"""Go's ``net.SplitHostPort`` and ``net.JoinHostPort``, which etcd's addresses follow
(IPv6 hosts in brackets)."""

from __future__ import annotations


def split_host_port(addr: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``: ``("host", "port")``, IPv6 in brackets; None if malformed."""
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0 or addr[end + 1 : end + 2] != ":":
            return None
        host, port = addr[1:end], addr[end + 2 :]
        if "[" in host or "]" in port or "[" in port:
            return None
        return host, port
    host, colon, port = addr.rpartition(":")
    if not colon or ":" in host or "[" in addr or "]" in addr:
        return None
    return host, port


def join_host_port(host: str, port: int | str) -> str:
    """Go's ``net.JoinHostPort``: ``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
