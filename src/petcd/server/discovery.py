"""Bootstrapping a cluster through a discovery URL (``--discovery``): etcd's v2 discovery protocol.

Theory of operation
-------------------
A discovery URL names a directory in the v2 keys API of some etcd (the public
``discovery.etcd.io`` or one's own: ``http://host:2379/v2/keys/discovery/<token>``) whose
``_config/size`` key holds the size of the cluster to form. Each new member, before it writes
anything of its own, takes these steps (etcd 3.5's ``v2discovery``; the wire is the v2 keys
API over HTTP/1.1 and JSON):

1. it reads ``_config/size`` and the directory: when ``size`` members other than itself
   registered already, the cluster is full (``discovery: cluster is full``), and it registers
   nothing;
2. it registers itself: creates ``<dir>/<member id in hex>`` (``prevExist=false``) with its
   ``name=peer URL,...`` entry, then waits for that key to be visible on the service; a key
   already there is ``discovery: found duplicate id`` (the member was registered before: its
   data dir was lost, or the token is reused);
3. it waits (a v2 watch on the directory, recursive, from the index of its read) until
   ``size`` members registered, and takes the first ``size`` by creation index;
4. their entries, joined, are its initial cluster; the member ids come from the peer URLs and
   the discovery URL as the cluster token (``petcd.server.config`` sets it), so every member
   derives the same ids and cluster id as etcd's members would.

The member's id is known before discovery because it is the one it will have: its peer URLs
and the token. A failed read of the service (connection refused, a reset) is retried after
2, 4, 8 ... 256 seconds, for ever, as etcd; a watch that times out here (etcd's never does)
is asked again from the same index. No proxy from the environment is used; ``--discovery-proxy``
names one for both schemes. Everything here blocks: it runs once, at bootstrap, before the
member serves anything, and a signal stops the process as at any point of start-up.

Never: register a member of a full cluster, or a second entry for the same member.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from petcd.server.errors import ConfigError
from petcd.server.ids import format_id
from petcd.server.log import Logger

# etcd's v2 error code for a create of a key that exists.
_NODE_EXIST = 105
_INVALID_JSON = (
    "client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint"
)

# Go's http client defaults that etcd's discovery uses: a 1 s request timeout for reads and
# the create (``client.DefaultRequestTimeout``), 30 s to dial; no end to a watch (here: ask
# again after this many seconds).
_REQUEST_TIMEOUT_S = 1.0
_WATCH_POLL_S = 60.0
_MAX_EXPONENTIAL_RETRIES = 8


class DiscoveryError(ConfigError):
    """etcd's ``DiscoveryError``: "failed to join discovery cluster (<reason>)"."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"failed to join discovery cluster ({reason})")
        self.reason = reason


FULL_CLUSTER = "discovery: cluster is full"
DUPLICATE_ID = "discovery: found duplicate id"
DUPLICATE_NAME = "discovery: found duplicate name"
BAD_SIZE_KEY = "discovery: size key is bad"
BAD_ENDPOINT = "discovery: bad discovery endpoint"
INVALID_URL = "discovery: invalid URL"


class _Unreachable(Exception):
    """The service did not answer (etcd's ``client.ClusterError``): retried."""


class _InvalidJSON(DiscoveryError):
    """The answer is not JSON: not an etcd."""

    def __init__(self) -> None:
        super().__init__(_INVALID_JSON)


@dataclass(frozen=True, slots=True)
class _Node:
    key: str
    value: str
    created_index: int


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: Any  # decoded JSON
    index: int  # X-Etcd-Index


def proxy_url(proxy: str) -> str:
    """``--discovery-proxy`` as etcd reads it: an address without an http(s) scheme is
    taken as ``http://<address>``."""
    parsed = urllib.parse.urlsplit(proxy)
    if parsed.scheme.startswith("http") and parsed.netloc:
        return proxy
    return "http://" + proxy


class Discovery:
    """One member's conversation with the discovery service at ``url``."""

    def __init__(
        self,
        url: str,
        member_id: int,
        log: Logger,
        *,
        proxy: str = "",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DiscoveryError(INVALID_URL)
        self._endpoint = f"{parts.scheme}://{parts.netloc}"
        self._url = self._endpoint  # what etcd's log lines call the discovery URL
        self._dir = "/" + parts.path.strip("/")
        self._self_key = f"{self._dir}/{format_id(member_id)}"
        self._log = log
        self._sleep = sleep
        self._retries = 0
        proxies = {}
        if proxy:
            p = proxy_url(proxy)
            log.info("running proxy with discovery", proxy_url=p)
            proxies = {"http": p, "https": p}
        # An empty ProxyHandler: no proxy from the environment, as etcd's transport.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))

    # --- the steps ---------------------------------------------------------------------------

    def join(self, entry: str) -> str:
        """Register ``entry`` (``name=url,...``) and return the initial cluster string."""
        self._check()  # a full cluster registers nothing
        self._create_self(entry)
        nodes, size, index = self._check()
        return self._to_cluster(self._wait(nodes, size, index), size)

    def _check(self) -> tuple[list[_Node], int, int]:
        """(registered members by creation, size, index of the read); raises when full."""
        while True:
            try:
                return self._check_once()
            except _Unreachable:
                self._backoff("cluster status check")

    def _check_once(self) -> tuple[list[_Node], int, int]:
        try:
            reply = self._get(f"{self._dir}/_config/size")
        except _InvalidJSON:
            raise DiscoveryError(BAD_ENDPOINT) from None
        # A missing size key fails with the service's own error ("100: Key not found ..."):
        # etcd's check for its "size key not found" never matches its client's error type.
        _raise_for(reply)
        try:
            size = int(str(reply.body["node"]["value"]), 10)
        except (KeyError, TypeError, ValueError):
            raise DiscoveryError(BAD_SIZE_KEY) from None
        if size < 0:
            raise DiscoveryError(BAD_SIZE_KEY)
        reply = self._get(self._dir)
        _raise_for(reply)
        nodes = sorted(
            (
                _node(n)
                for n in reply.body.get("node", {}).get("nodes", []) or []
                if _base(n.get("key", "")) != "_config"
            ),
            key=lambda n: n.created_index,
        )
        mine = _base(self._self_key)
        for i, n in enumerate(nodes):
            if _base(n.key) == mine:
                break
            if i >= size - 1:
                raise DiscoveryError(FULL_CLUSTER)
        return nodes, size, reply.index

    def _create_self(self, entry: str) -> None:
        body = urllib.parse.urlencode({"value": entry}).encode()
        try:
            reply = self._request(
                "PUT", self._self_key, {"prevExist": "false"}, body, _REQUEST_TIMEOUT_S
            )
        except _Unreachable as e:  # etcd fails here too, without a retry
            raise DiscoveryError(str(e)) from None
        if reply.status == 412 and _error_code(reply.body) == _NODE_EXIST:
            raise DiscoveryError(DUPLICATE_ID)
        _raise_for(reply)
        created = int(reply.body["node"]["createdIndex"])
        # Wait until the registration is visible on the service (a watch from its index).
        while True:
            try:
                reply = self._request(
                    "GET", self._self_key, {"wait": "true", "waitIndex": str(created)},
                    None, _WATCH_POLL_S,
                )  # fmt: skip
            except _Unreachable as e:
                raise DiscoveryError(str(e)) from None
            if reply.status != 0:
                _raise_for(reply)
                return

    def _wait(self, nodes: list[_Node], size: int, index: int) -> list[_Node]:
        """The first ``size`` registrations: those known, then those the watch brings."""
        while True:
            found = list(nodes[:size])
            for n in found:
                if _base(n.key) == _base(self._self_key):
                    # (log, not info: etcd's field is named "self")
                    fields = {"discovery_url": self._url, "self": _base(self._self_key)}
                    self._log.log("info", "found self from discovery server", 1, **fields)
                else:
                    self._log.info(
                        "found peer from discovery server",
                        discovery_url=self._url,
                        peer=_base(n.key),
                    )
            try:
                return self._watch(found, size, index)
            except _Unreachable as e:
                self._log.warn(
                    "error while waiting for peers", discovery_url=self._url, error=str(e)
                )
                self._backoff("waiting for other nodes")
                nodes, size, index = self._check()

    def _watch(self, found: list[_Node], size: int, index: int) -> list[_Node]:
        wait_index = index + 1
        while len(found) < size:
            self._log.info(
                "found peers from discovery server; waiting for more",
                discovery_url=self._url,
                found_peers=len(found),
                needed_peers=size - len(found),
            )
            while True:
                query = {"wait": "true", "recursive": "true", "waitIndex": str(wait_index)}
                reply = self._request("GET", self._dir, query, None, _WATCH_POLL_S)
                if reply.status != 0:
                    break
            _raise_for(reply)
            node = _node(reply.body.get("node", {}))
            wait_index = int(reply.body.get("node", {}).get("modifiedIndex", wait_index)) + 1
            self._log.info(
                "found peer from discovery server", discovery_url=self._url, peer=_base(node.key)
            )
            found.append(node)
        self._log.info(
            "found all needed peers from discovery server",
            discovery_url=self._url,
            found_peers=len(found),
        )
        return found

    @staticmethod
    def _to_cluster(nodes: list[_Node], size: int) -> str:
        text = ",".join(n.value for n in nodes)
        names: set[str] = set()
        for part in text.split(","):
            name, sep, url = part.partition("=")
            if not sep or not url:
                raise DiscoveryError(INVALID_URL)
            names.add(name)
        if len(names) != size:
            raise DiscoveryError(DUPLICATE_NAME)
        return text

    # --- HTTP ----------------------------------------------------------------------------

    def _backoff(self, step: str) -> None:
        self._retries += 1
        seconds = 1 << min(self._retries, _MAX_EXPONENTIAL_RETRIES)
        self._log.info(
            "retry connecting to discovery service",
            url=self._url,
            reason=step,
            backoff=f"{seconds}s",
        )
        self._sleep(seconds)

    def _get(self, key: str) -> _Reply:
        return self._request("GET", key, {}, None, _REQUEST_TIMEOUT_S)

    def _request(
        self, method: str, key: str, query: dict[str, str], body: bytes | None, timeout_s: float
    ) -> _Reply:
        """One request; a reply with status 0 is a watch that timed out here (ask again)."""
        url = self._endpoint + urllib.parse.quote(key)
        if query:
            url += "?" + urllib.parse.urlencode(query)
        req = urllib.request.Request(url, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self._opener.open(req, timeout=timeout_s) as resp:
                status, raw, index = resp.status, resp.read(), resp.headers.get("X-Etcd-Index")
        except urllib.error.HTTPError as e:
            status, raw, index = e.code, e.read(), e.headers.get("X-Etcd-Index")
        except TimeoutError:
            if "wait" in query:
                return _Reply(0, None, 0)
            raise _Unreachable(f"{method} {url}: timed out") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError) and "wait" in query:
                return _Reply(0, None, 0)
            raise _Unreachable(f"{method} {url}: {reason}") from None
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise _InvalidJSON() from None
        if not isinstance(decoded, dict):
            raise _InvalidJSON()
        return _Reply(status, decoded, int(index) if index and index.isdigit() else 0)


def _raise_for(reply: _Reply) -> None:
    if 200 <= reply.status < 300:
        return
    message = reply.body.get("message", "") if isinstance(reply.body, dict) else ""
    cause = reply.body.get("cause", "") if isinstance(reply.body, dict) else ""
    code = _error_code(reply.body)
    if code is None:
        raise DiscoveryError(f"unexpected status {reply.status} from the discovery service")
    index = reply.body.get("index", 0)
    # etcd's v2 client error text: "<code>: <message> (<cause>) [<index>]".
    raise DiscoveryError(f"{code}: {message} ({cause}) [{index}]")


def _error_code(body: Any) -> int | None:
    code = body.get("errorCode") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None


def _node(n: Any) -> _Node:
    return _Node(str(n.get("key", "")), str(n.get("value", "")), int(n.get("createdIndex", 0)))


def _base(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1]
