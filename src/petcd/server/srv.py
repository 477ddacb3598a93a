"""DNS SRV discovery (``--discovery-srv``), as etcd 3.5 does it, for the member, the gateway
and ``petcdctl``.

Theory of operation
-------------------
A domain publishes its etcd cluster in SRV records: ``_etcd-server-ssl._tcp.<domain>`` and
``_etcd-server._tcp.<domain>`` list the members' peer endpoints (https and http),
``_etcd-client-ssl._tcp.<domain>`` and ``_etcd-client._tcp.<domain>`` their client endpoints;
``--discovery-srv-name <name>`` looks up ``_etcd-server-<name>._tcp...`` and so on instead.

- A founding member (``cluster_from_dns``) turns the peer records into its initial cluster:
  each record ``target:port`` becomes ``<n>=<scheme>://<target>:<port>``, where ``<n>`` is the
  member's ``--name`` when the target and port resolve to the address of one of its
  ``--initial-advertise-peer-urls``, and ``0``, ``1``, ... otherwise (the others publish their
  names once they run). A record of its own address in the other scheme is a mismatch. The
  https records come first, then the http ones; a lookup that fails is logged and skipped, and
  discovery fails only when neither gives a member.
- A client (``client_endpoints``) takes the client records: https ones first, then http ones;
  it fails only when both lookups fail.

Records come in priority order (lowest first), by weight (highest first) within a priority;
etcd randomizes within a priority by weight, which gives the same set. Names are looked up with
the system's resolver configuration (``/etc/resolv.conf``) through dnspython, addresses with
the system's ``getaddrinfo``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from petcd.server.errors import ConfigError
from petcd.server.hostport import join_host_port
from petcd.server.log import Logger

if TYPE_CHECKING:
    import dns.resolver


class SrvError(Exception):
    """A lookup or the records it found could not be used (etcd's error text)."""


class SrvBootstrapError(ConfigError):
    """A founding member could not take its initial cluster from DNS (exit 1)."""


@dataclass(frozen=True, slots=True)
class SrvRecord:
    target: str  # without the trailing dot
    port: int


def service_name(service: str, name: str, scheme: str) -> str:
    """etcd's ``GetSRVService``: ``etcd-client`` -> ``etcd-client-ssl`` for https, plus
    ``-<name>`` when ``--discovery-srv-name`` is given."""
    if scheme == "https":
        service += "-ssl"
    return f"{service}-{name}" if name else service


def lookup_srv(service: str, domain: str) -> list[SrvRecord]:
    """The SRV records of ``_<service>._tcp.<domain>``, in priority and weight order."""
    import dns.exception  # 80 ms to import: only when a lookup is asked for
    import dns.resolver

    qname = f"_{service}._tcp.{domain}"
    try:
        resolver = dns.resolver.get_default_resolver()
        where = f"lookup {qname} on {_first_nameserver(resolver)}"
        answer = resolver.resolve(qname, "SRV", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        raise SrvError(f"{where}: no such host") from None  # Go's words for both
    except dns.exception.DNSException as e:
        raise SrvError(f"lookup {qname}: {e}") from None
    records = sorted(answer, key=lambda r: (r.priority, -r.weight))
    return [SrvRecord(str(r.target).rstrip("."), int(r.port)) for r in records]


def _first_nameserver(resolver: dns.resolver.Resolver) -> str:
    servers = [str(n) for n in resolver.nameservers]
    if not servers:
        return "[::1]:53"
    return join_host_port(servers[0], 53)


def resolve_tcp(host: str, port: int) -> str:
    """Go's ``net.ResolveTCPAddr("tcp", host:port).String()``: ``ip:port`` (IPv4 first)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise SrvError(f"lookup {host}: {e}") from None
    infos.sort(key=lambda i: i[0] != socket.AF_INET)
    ip = str(infos[0][4][0])
    return join_host_port(ip, port)


def get_cluster(
    scheme: str, service: str, name: str, domain: str, own_peer_urls: Iterable[str]
) -> list[str]:
    """etcd's ``srv.GetCluster``: ``name=url`` entries of one service's records."""
    own: dict[str, str] = {}
    for u in own_peer_urls:
        parts = urlsplit(u)
        own[resolve_tcp(parts.hostname or "", parts.port or 80)] = parts.scheme
    try:
        records = lookup_srv(service, domain)
    except SrvError as e:
        raise SrvError(f"error querying DNS SRV records for _{service} {e}") from None
    found: list[str] = []
    last: SrvError | None = None
    temp = 0
    for r in records:
        try:
            addr = resolve_tcp(r.target, r.port)
        except SrvError as e:
            last = e
            continue
        url = f"{scheme}://{join_host_port(r.target, r.port)}"
        if addr in own:
            if own[addr] != scheme:
                last = SrvError(
                    f"bootstrap at {url} from DNS for {service} has scheme mismatch with "
                    f"expected peer {own[addr]}://{addr}"
                )
                continue
            found.append(f"{name}={url}")
        else:
            found.append(f"{temp}={url}")
            temp += 1
    if not found:
        raise SrvError(f"error querying DNS SRV records for _{service} {last}")
    return found


def cluster_from_dns(
    domain: str, service_suffix: str, name: str, own_peer_urls: Iterable[str], log: Logger
) -> list[str]:
    """etcd's ``GetDNSClusterNames``: the https peer records' entries, then the http ones'."""
    own = list(own_peer_urls)
    suffix = f"-{service_suffix}" if service_suffix else ""
    found: list[str] = []
    errors: list[str] = []
    for scheme, service in (
        ("https", "etcd-server-ssl" + suffix),
        ("http", "etcd-server" + suffix),
    ):
        error = ""
        try:
            found += get_cluster(scheme, service, name, domain, own)
        except SrvError as e:
            error = str(e)
            errors.append(error)
        log.info(
            f"get cluster for {'etcd-server-ssl' if scheme == 'https' else 'etcd-server'} SRV",
            service_scheme=scheme,
            service_name=service,
            server_name=name,
            discovery_srv=domain,
            advertise_peer_urls=own,
            found_cluster=found,
            error=error or None,
        )
    if not found:
        raise SrvError("; ".join(errors))
    return found


def client_endpoints(domain: str, service_suffix: str) -> list[str]:
    """etcd's ``srv.GetClient("etcd-client", ...)``: the client URLs, https ones first."""
    urls: list[str] = []
    errors: list[str] = []
    for scheme in ("https", "http"):
        try:
            records = lookup_srv(service_name("etcd-client", service_suffix, scheme), domain)
        except SrvError as e:
            errors.append(str(e))
            continue
        urls += [f"{scheme}://{join_host_port(r.target, r.port)}" for r in records]
    if len(errors) == 2:
        raise SrvError(f"dns lookup errors: {errors[0]} and {errors[1]}")
    return urls
