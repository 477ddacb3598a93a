"""The grpc.aio fallback (``--client-transport grpcio``) keeps working now that the native
front end is the default: the end-to-end scenarios of ``test_native_transport`` run again on a
member started with ``--client-transport grpcio``. Two of them are the native front end's own
(its log line, its grpc-go texts for over-size messages and unknown services: grpc.aio has
grpc core's texts) and are not repeated here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration import test_native_transport as scenarios
from tests.integration.petcd_proc import PetcdProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    p = PetcdProcess(
        tmp_path_factory.mktemp("grpcio") / "data",
        name="native",  # the scenarios expect this member name
        extra_args=[
            "--client-transport", "grpcio",
            "--max-request-bytes", str(scenarios.MAX_REQUEST_BYTES),
        ],
    )  # fmt: skip
    p.start()
    try:
        yield p
    finally:
        p.stop()


def test_the_server_says_it_serves_on_grpcio(server: PetcdProcess) -> None:
    records = server.log_records()
    assert any(r.get("msg") == "ready to serve client requests" for r in records)
    [listeners] = [r for r in records if r.get("msg") == "configuring client listeners"]
    assert listeners["client-transport"] == "grpcio"


test_etcdctl_put_get_del_txn = scenarios.test_etcdctl_put_get_del_txn
test_the_python_client_sync_calls = scenarios.test_the_python_client_sync_calls
test_watch_events_and_a_cancel_request = scenarios.test_watch_events_and_a_cancel_request
test_a_dropped_watch_stream_leaves_the_server_serving = (
    scenarios.test_a_dropped_watch_stream_leaves_the_server_serving
)
test_etcdctl_watch_prints_events = scenarios.test_etcdctl_watch_prints_events
test_leases_grant_keep_alive_ttl_revoke = scenarios.test_leases_grant_keep_alive_ttl_revoke
test_member_list_and_endpoint_status = scenarios.test_member_list_and_endpoint_status
test_snapshot_save_of_a_few_mib = scenarios.test_snapshot_save_of_a_few_mib
test_etcdctl_lock_and_elect = scenarios.test_etcdctl_lock_and_elect
test_hasleader_metadata_on_a_member_with_a_leader = (
    scenarios.test_hasleader_metadata_on_a_member_with_a_leader
)
test_a_client_deadline_on_a_held_call_and_the_server_cleans_up = (
    scenarios.test_a_client_deadline_on_a_held_call_and_the_server_cleans_up
)
