"""petcd's native gRPC front end (Rust, native/frontend/): HTTP/2 and gRPC framing on
threads of its own; Python takes each call's events in batches and answers in batches.

The binding interface is docs/helpers' frontend-api.md, restated here. Event tuples
returned by :meth:`Frontend.take`:

* ``(0, call_id, method, metadata, timeout, peer)`` NEW: a call began. ``call_id`` is an
  int never reused; ``method`` the HTTP/2 ``:path`` (``"/etcdserverpb.KV/Range"``);
  ``metadata`` a tuple of ``(key, value)`` in header order, keys lower-case, without
  pseudo-headers, ``content-type``, ``te``, ``grpc-timeout``, ``grpc-encoding`` and
  ``grpc-accept-encoding``; values are ``str``, except for keys ending in ``-bin``:
  the base64-decoded ``bytes``. ``timeout`` is the ``grpc-timeout`` in seconds or None;
  ``peer`` is grpc's form, ``"ipv4:127.0.0.1:54321"`` or ``"ipv6:[::1]:54321"``.
* ``(1, call_id, payload)`` MESSAGE: one whole request message, without its 5-byte prefix.
* ``(2, call_id)`` HALF_CLOSE: the client sent END_STREAM; no more messages.
* ``(3, call_id)`` CANCEL: the call is over from the client's side (RST_STREAM, the
  connection closed, or its deadline passed, in which case the front end has already
  answered DEADLINE_EXCEEDED "context deadline exceeded"), or the front end ended it
  itself (an over-size or compressed request, an over-size response). Python must stop
  the handler; anything sent for the call afterwards is ignored.
* ``(4, call_id)`` DRAINED: after :meth:`Frontend.send` reported the call over 1 MiB
  queued, its queued outgoing bytes fell to 256 KiB or less.
* ``(8, fd, peer, certs)`` HTTP1 (only with ``http1=True``): a new connection whose first
  bytes are not HTTP/2's preface. ``fd`` is its socket, now Python's to serve and close, with
  nothing read from it yet; ``peer`` as in NEW; ``certs``: None on a plain connection, else
  (behind TLS) a tuple of the DER certificates the client presented, leaf first, empty when
  it presented none.

Differences from frontend-api.md, as implemented:

* A compressed request message (flag 1) with ``grpc-encoding: gzip`` arrives as MESSAGE
  already decompressed; over ``max_recv_bytes`` once decompressed it fails with
  RESOURCE_EXHAUSTED "grpc: received message after decompression larger than max (<n> vs.
  <max>)", and one that is not gzip with INTERNAL "grpc: failed to decompress the received
  message: <why>". With another ``grpc-encoding`` the status is UNIMPLEMENTED "grpc:
  Decompressor is not installed for grpc-encoding \\"<name>\\""; without one (or
  ``identity``) INTERNAL "grpc: compressed flag set with identity or empty encoder", as
  grpc-go answers. Responses are never compressed.
* ``keepalive_min_time_ms`` is accepted and not enforced: h2 does not expose the PINGs a
  client sends, so clients that ping too often are not sent GOAWAY too_many_pings.
* Metadata order: header order, except that the values of a repeated key come together at
  the key's first position (the HTTP header map groups them). A ``-bin`` value that is not
  base64 arrives as ``b""``; an unparsable ``grpc-timeout`` as no timeout.
* ``close()`` ends open calls with RST/GOAWAY (the client sees UNAVAILABLE) and queues
  CANCEL for each of them; the events stay takeable after close().
"""

from typing import Any, TypeAlias

Metadata: TypeAlias = tuple[tuple[str, str | bytes], ...]
NewCall: TypeAlias = tuple[int, int, str, Metadata, float | None, str]
# NEW, MESSAGE, or HALF_CLOSE / CANCEL / DRAINED, or HTTP1.
Event: TypeAlias = NewCall | tuple[int, int, bytes] | tuple[int, int] | tuple[int, int, str]
SendItem: TypeAlias = tuple[int, bytes] | tuple[int, bytes | None, int, str]

# The event kinds (first element of an event tuple).
NEW: int  # 0
MESSAGE: int  # 1
HALF_CLOSE: int  # 2
CANCEL: int  # 3
DRAINED: int  # 4
HTTP1: int  # 8

def tls12_cipher_suites() -> list[str]:
    """The IANA names of the TLS 1.2 cipher suites a TLS listener can offer."""

class Frontend:
    """The front end. Binds every listener in the constructor (SO_REUSEADDR; host
    "127.0.0.1", "0.0.0.0", "::", "::1" or a name; port 0 = any free port) and raises
    OSError naming the address when one cannot be bound, e.g. "cannot listen on
    127.0.0.1:2379: Address already in use" (with its errno)."""

    def __init__(
        self,
        listeners: list[tuple[str, int]],
        *,
        max_recv_bytes: int,
        max_send_bytes: int,
        keepalive_min_time_ms: int,
        keepalive_interval_ms: int,
        keepalive_timeout_ms: int,
        threads: int = 1,
        http1: bool = False,
        tls: tuple[
            bytes, bytes, bytes | None, list[str], list[str], list[bytes] | None, list[str] | None
        ]
        | None = None,
        secure: list[bool] | None = None,
        plain_too: list[bool] | None = None,
    ) -> None:
        """``tls``: (certificate chain PEM, key PEM, trusted CA PEM or None, TLS versions of
        "1.2" / "1.3", TLS 1.2 cipher suites by IANA name or [] for the defaults, revocation
        lists in DER or None: a client whose certificate one revokes is refused, host names or
        IP addresses one of which a client certificate must be valid for, or None); a client
        certificate signed by the CA is required when one is given. ``secure``: per
        listener, whether it serves TLS (default: none); ``plain_too``: per listener, whether a
        secure one serves plain connections too (etcd's http:// and https:// URLs on one port:
        a connection whose first byte begins a TLS handshake record is TLS, any other plain).
        ValueError says what is wrong with
        the material. On a TLS listener ALPN picks the protocol: ``h2`` is HTTP/2; anything
        else (``http/1.1``, none) with ``http1=True`` arrives as an HTTP1 event whose ``fd``
        is one end of a Unix socket pair carrying the decrypted bytes."""
    def ports(self) -> list[int]:
        """The bound ports, in listener order."""

    def start(self) -> None:
        """Starts serving: a tokio runtime with ``threads`` worker threads named
        "petcd-frontend"."""

    def fileno(self) -> int:
        """A non-blocking eventfd, readable whenever :meth:`take` has events; written only
        when the queue goes from empty to non-empty."""

    def take(self) -> list[Event]:
        """Every queued event, in arrival order (see the module docstring); resets the
        eventfd."""

    def send(self, items: list[SendItem]) -> list[int]:
        """Queues, never blocking on the network:

        * ``(call_id, message)``: one response message (the response HEADERS go first);
        * ``(call_id, message_or_None, code, details)``: an optional last message, then
          trailers grpc-status/grpc-message (percent-encoded; omitted when empty) and
          END_STREAM. With nothing sent before and no message: one trailers-only HEADERS.

        A message over ``max_send_bytes`` ends the call with RESOURCE_EXHAUSTED "grpc:
        trying to send message larger than max (<got> vs. <max>)" and queues CANCEL.
        Items for unknown, finished or cancelled calls are ignored. The items of one
        connection go out in as few socket writes as possible.

        Returns the call ids that now have more than 1 MiB queued and not yet written:
        send nothing more on those until their DRAINED event."""

    def stop_accepting(self) -> None:
        """Closes the listeners; open connections go on."""

    def drain(self) -> None:
        """GOAWAY on every open connection: its calls in progress go on, the client starts
        no new ones there (grpc clients take them to another connection); the connection
        ends once its last call did. Call :meth:`stop_accepting` first."""

    def close(self) -> None:
        """Sends GOAWAY, ends every open call, stops the runtime. Idempotent; also done
        when the object is dropped."""

def range_response(
    cluster_id: int,
    member_id: int,
    revision: int,
    raft_term: int,
    records: list[bytes | memoryview],
    more: bool,
    count: int,
) -> bytes:
    """etcd's ``RangeResponse`` encoded: the header's fields, one ``KeyValue`` per record in
    order, ``more`` and ``count``; exactly the bytes protobuf writes for that message.

    A record is petcd's stored KeyValue (``petcd.mvcc.kvstore.encode_kv``: five big-endian
    int64 create_revision, mod_revision, version, lease and key length, then the key and the
    value), as ``bytes`` or a read-only contiguous buffer (a memoryview into the backend's
    map, ``Backend.get_many_pinned``). ValueError names a record that is not one; TypeError if
    a record is neither.
    See docs/enhancements/0006-range-encoding.md.
    """

class RequestDecoder:
    """etcd's write requests decoded from their bytes into petcd's request dataclasses
    (``petcd.mvcc.requests``) without protobuf's objects. Only the encodings protobuf's own
    serializers write are taken: each field at most once with its declared wire type, no
    unknown field, at most one member of a ``oneof``, no nested Txn. For anything else the
    methods return None, and the caller parses the bytes with protobuf and
    ``petcd.grpc.convert``, which stay the reference: for every input a method does take,
    its result equals theirs. See docs/enhancements/0008-request-decoding.md.

    The constructor takes the dataclasses to build (TypeError unless each is a frozen,
    slotted dataclass with etcd's fields in etcd's order and no ``__post_init__``)."""

    def __init__(
        self,
        range: type,
        put: type,
        delete_range: type,
        compare: type,
        request_op: type,
        txn: type,
    ) -> None: ...
    def put(self, data: bytes) -> Any | None:
        """A ``PutRequest`` from an etcdserverpb.PutRequest's bytes, or None."""

    def delete_range(self, data: bytes) -> Any | None:
        """A ``DeleteRangeRequest`` from an etcdserverpb.DeleteRangeRequest's bytes, or None."""

    def txn(self, data: bytes) -> Any | None:
        """A ``TxnRequest`` from an etcdserverpb.TxnRequest's bytes, or None."""
