"""HTTP/1 on the gRPC client port: the connections the native front end did not take.

Theory of operation
-------------------
etcd multiplexes its client port: HTTP/2 goes to gRPC, HTTP/1 to ``/health``, ``/version``,
``/metrics`` and the JSON gateway (``/v3/...``). petcd's native front end
(``petcd._frontend``) peeks at each new connection's first bytes; one that does not begin
with HTTP/2's preface is handed over, as a socket, through ``NativeServer``'s ``http1``
callback to ``HttpOnClientPort.accept``, which lets aiohttp serve it with the app of
``petcd.http.server`` (gateway included, as on ``--listen-client-http-urls``). On an
``https`` client URL the front end decides by ALPN after the TLS handshake instead, and the
socket handed over is one end of a Unix socket pair carrying the decrypted bytes
(docs/enhancements/0009-client-tls.md); nothing here differs.

Behind TLS the front end passes the certificates the client presented (DER, leaf first;
none is an empty tuple) with the socket: ``client_certificates(transport)`` gives them to v2
auth (``petcd.http.v2auth``), which takes their common names as users with
``--client-cert-auth``, as etcd does; ``behind_tls(transport)`` says the connection is TLS
(etcd checks the Host header of plain requests only: ``petcd.http.server``).

aiohttp costs 0.4 s to import, so it is imported, and its app set up, at the first such
connection; sockets that arrive meanwhile wait for it. ``stop()`` closes the connections.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import weakref
from typing import Any

from petcd.server.log import Logger

# The client certificates of the connections handed over behind TLS (empty when the client
# presented none), by their transport.
_CERTS: weakref.WeakKeyDictionary[Any, tuple[bytes, ...]] = weakref.WeakKeyDictionary()


def behind_tls(transport: Any) -> bool:
    """Whether ``transport`` is TLS: aiohttp's own (``--listen-client-http-urls``) or one the
    native front end terminated."""
    if transport is None:
        return False
    if transport.get_extra_info("ssl_object") is not None:
        return True
    return client_certificates(transport) is not None


def client_certificates(transport: Any) -> tuple[bytes, ...] | None:
    """The DER certificates the client of ``transport`` presented to the native front end
    (leaf first; empty if none), or None (no TLS, or not a connection handed over)."""
    if transport is None:
        return None
    try:
        return _CERTS.get(transport)
    except TypeError:  # not weakly referenceable: not one of ours
        return None


def presented_chain(transport: Any) -> list[bytes]:
    """The DER certificates the client of ``transport`` presented over TLS, leaf first: all
    of them through the native front end, the leaf alone through aiohttp's TLS (Python's
    ``ssl`` gives no more); empty without TLS or a client certificate."""
    chain = list(client_certificates(transport) or ())
    if not chain and transport is not None:
        obj = transport.get_extra_info("ssl_object")
        if isinstance(obj, ssl.SSLObject):
            leaf = obj.getpeercert(binary_form=True)
            chain = [leaf] if leaf else []
    return chain


class HttpOnClientPort:
    """Serves accepted HTTP/1 sockets with petcd's HTTP app (``member`` is its source)."""

    def __init__(
        self,
        member: Any,
        log: Logger | None = None,
        gateway_calls_max: int = 2**32 - 1,
        gateway: bool = True,
        v2: bool = False,
        access: Any = None,
    ) -> None:
        """``gateway``: serve the JSON gateway too (``--enable-grpc-gateway``); ``v2``: etcd's
        v2 API (``--enable-v2``); ``access``: etcd's access controller
        (``petcd.http.server.AccessPolicy``; its default when None)."""
        self._v2 = v2
        self._access = access
        self._member = member
        self._log = log
        self._calls_max = gateway_calls_max
        self._gateway = gateway
        self._runner: Any = None
        self._ready: asyncio.Future[Any] | None = None  # the aiohttp protocol factory
        self._pending: set[asyncio.Task[None]] = set()
        self._stopped = False

    def accept(self, sock: socket.socket, certs: tuple[bytes, ...] | None = None) -> None:
        """Serve ``sock`` (a connected socket the caller gives up); ``certs``: when the front
        end terminated TLS, the client's certificates (empty if it presented none)."""
        if self._stopped:
            sock.close()
            return
        task = asyncio.get_running_loop().create_task(self._serve(sock, certs))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _serve(self, sock: socket.socket, certs: tuple[bytes, ...] | None) -> None:
        try:
            factory = await self._factory()
            if self._stopped:
                sock.close()
                return
            loop = asyncio.get_running_loop()
            transport, _ = await loop.connect_accepted_socket(factory, sock)
            if certs is not None:
                # Before the first request is handled: aiohttp handles one only after the
                # data's callback, which the loop runs after this task's wake-up.
                _CERTS[transport] = certs
        except BaseException as e:
            sock.close()
            if self._log is not None and not isinstance(e, asyncio.CancelledError):
                self._log.error("cannot serve an HTTP/1 connection", error=repr(e))
            if not isinstance(e, Exception):
                raise

    async def _factory(self) -> Any:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                from petcd.http.access import AccessPolicy
                from petcd.http.server import make_app, make_runner

                app = make_app(
                    self._member,
                    self._member if self._gateway else None,
                    gateway_calls_max=self._calls_max,
                    log=self._log,
                    v2_member=self._member if self._v2 else None,
                    access=self._access or AccessPolicy(),  # the client port's
                )
                runner = make_runner(app)
                await runner.setup()
                self._runner = runner
                self._ready.set_result(runner.server)
            except BaseException as e:
                self._ready.set_exception(e)
                raise
        return await asyncio.shield(self._ready)

    async def stop(self) -> None:
        """Closes every connection this served; later ones are closed at once."""
        self._stopped = True
        for task in list(self._pending):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
