"""gRPC's standard health service (``grpc.health.v1.Health``) on the client port, as etcd
registers it: ``Check("")`` is SERVING, an unknown service name is NOT_FOUND ``unknown
service``, ``Watch("")`` sends SERVING and keeps the stream open. On both client transports
(the native front end and ``--client-transport grpcio``). etcd's robustness tests call
``Check`` on every member before and after each fault they inject
(tests/compat/thirdparty/test_etcd_robustness.py); Kubernetes' gRPC probes do the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petcd.api.healthpb import health_pb2, health_pb2_grpc
from tests.integration.petcd_proc import PetcdProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


@pytest.fixture(scope="module", params=["native", "grpcio"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PetcdProcess]:
    transport = str(request.param)
    p = PetcdProcess(
        Path(tmp_path_factory.mktemp(f"health-{transport}")) / "data",
        extra_args=["--client-transport", transport],
    )
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def health(server: PetcdProcess) -> Iterator[object]:
    with grpc.insecure_channel(server.endpoint) as channel:
        yield health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]


def test_check_of_the_server_is_serving(health: object) -> None:
    resp = health.Check(health_pb2.HealthCheckRequest(), timeout=10)  # type: ignore[attr-defined]
    assert resp.status == SERVING


def test_check_of_an_unknown_service_is_not_found(health: object) -> None:
    with pytest.raises(grpc.RpcError) as err:
        health.Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service="etcdserverpb.KV"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "unknown service"


@pytest.mark.parametrize(("service", "status"), [("", SERVING), ("nope", SERVICE_UNKNOWN)])
def test_watch_sends_the_status_and_stays_open(health: object, service: str, status: int) -> None:
    request = health_pb2.HealthCheckRequest(service=service)
    stream = health.Watch(request, timeout=3)  # type: ignore[attr-defined]
    try:
        first = next(stream)
        assert first.status == status
        # Nothing changes: the stream neither ends nor sends more while the server serves.
        with pytest.raises(grpc.RpcError) as err:
            second = next(stream)
            pytest.fail(f"the watch sent a second status {second}, or ended")
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        stream.cancel()
