"""The gRPC health checking service (``grpc.health.v1.Health``) on the client port.

Theory of operation
-------------------
etcd registers gRPC's standard health server next to its own services, with one entry: the
server as a whole (service name ``""``), SERVING from the start. Clients and tools that probe
a gRPC server the standard way (grpc-go's health-checking balancer, ``grpc_health_probe``,
Kubernetes' gRPC probes, etcd's robustness tests before and after each injected fault) call
``Check`` or ``Watch`` on it. This is the same surface: ``Check("")`` answers SERVING, any
other service name is NOT_FOUND ``unknown service`` (grpc-go's text), ``Watch`` sends the
current status (SERVICE_UNKNOWN for an unknown name) and then keeps the stream open until the
client ends it or the server stops, as grpc-go's health server does while nothing changes.

etcd turns the status to NOT_SERVING only during a defragmentation with
``--experimental-stop-grpc-service-on-defrag``, a flag petcd accepts and ignores; so the
status never changes here. It is deliberately not a readiness check: like etcd's, it says the
process serves gRPC, not that the cluster has a leader (``/readyz`` and ``/health`` say that).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from petcd.api.healthpb import health_pb2, health_pb2_grpc

SERVER = ""  # the service name of the server as a whole

_SERVING = health_pb2.HealthCheckResponse.SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService(health_pb2_grpc.HealthServicer):
    async def Check(self, request: Any, context: Any) -> Any:
        if request.service != SERVER:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=_SERVING)

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        status = _SERVING if request.service == SERVER else _UNKNOWN
        yield health_pb2.HealthCheckResponse(status=status)
        # Nothing ever changes the status: hold the stream until the call is cancelled.
        await asyncio.Event().wait()


def add_health_service(server: Any) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(  # type: ignore[no-untyped-call]
        HealthService(), server
    )
