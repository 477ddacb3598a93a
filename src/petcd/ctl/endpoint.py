"""``endpoint health``, ``endpoint status`` and ``endpoint hashkv``.

Theory of operation: ``health`` opens one client per endpoint and reads the key
``health`` through consensus (a linearizable range; "permission denied" still
proves the cluster committed it), then lists alarms: an active alarm makes the
endpoint unhealthy, as in etcdctl 3.5. Any unhealthy endpoint ends the command
with ``Error: unhealthy cluster`` (exit 1) after the report. ``status`` asks each
endpoint for its Maintenance.Status; a failing endpoint is reported on stderr
and makes the exit code 1 without an ``Error:`` line. ``--cluster`` replaces the
endpoint list by every member's client URLs. ``hashkv`` prints each endpoint's
KV history hash (Maintenance.HashKV) up to ``--rev``.
"""

from __future__ import annotations

import dataclasses
import time

from petcd.client import ClientError, PermissionDeniedError
from petcd.ctl.command import Command, Flag, FlagKind
from petcd.ctl.context import Invocation
from petcd.ctl.errors import EXIT_ERROR, ExitError, SilentExit
from petcd.ctl.gofmt import go_duration
from petcd.ctl.printer import EndpointHashKV, EndpointHealth, EndpointStatus, make_printer

_ALARM_NAMES = {1: "NOSPACE", 2: "CORRUPT"}


def endpoints_from_cluster(inv: Invocation) -> list[str]:
    if not inv.values["cluster"]:
        return inv.endpoints()
    try:
        members = inv.client().member_list()
    except ClientError as exc:
        raise ExitError(
            EXIT_ERROR, f"failed to fetch endpoints from etcd cluster member list: {exc}"
        ) from None
    return [url for member in members.members for url in member.clientURLs]


def check_health(inv: Invocation, endpoint: str) -> EndpointHealth:
    config = dataclasses.replace(inv.client_config(), endpoints=(endpoint,))
    client = inv.client_factory(config)
    try:
        start = time.monotonic()
        error = ""
        try:
            client.get(b"health")
        except PermissionDeniedError:
            pass
        except ClientError as exc:
            error = str(exc)
        took = go_duration(time.monotonic() - start)
        if not error:
            try:
                alarms = client.alarm_list()
            except ClientError:
                error = "Unable to fetch the alarm list"
            else:
                if alarms.alarms:
                    error = "Active Alarm(s): " + "".join(
                        _ALARM_NAMES.get(a.alarm, "UNKNOWN") + " " for a in alarms.alarms
                    )
        return EndpointHealth(endpoint, not error, took, error)
    finally:
        client.close()


def health_command(inv: Invocation) -> None:
    inv.apply_environment()
    printer = make_printer(inv)
    results = [check_health(inv, ep) for ep in endpoints_from_cluster(inv)]
    printer.endpoint_health(results)
    if any(h.error for h in results):
        raise ExitError(EXIT_ERROR, "unhealthy cluster")


def status_command(inv: Invocation) -> None:
    client = inv.client()
    statuses: list[EndpointStatus] = []
    failed = False
    for ep in endpoints_from_cluster(inv):
        try:
            statuses.append(EndpointStatus(ep, client.status(ep)))
        except ClientError as exc:
            failed = True
            inv.err(f"Failed to get the status of endpoint {ep} ({exc})\n")
    make_printer(inv).endpoint_status(statuses)
    if failed:
        raise SilentExit(EXIT_ERROR)


def hashkv_command(inv: Invocation) -> None:
    client = inv.client()
    hashes: list[EndpointHashKV] = []
    error: ClientError | None = None
    for ep in endpoints_from_cluster(inv):
        try:
            hashes.append(EndpointHashKV(ep, client.hash_kv(int(inv.values["rev"]), ep)))
        except ClientError as exc:
            error = exc
            inv.err(f"Failed to get the hash of endpoint {ep} ({exc})\n")
    make_printer(inv).endpoint_hashkv(hashes)
    if error is not None:
        raise ExitError(EXIT_ERROR, str(error))


STATUS_LONG = """When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.
The items in the lists are endpoint, ID, version, db size, is leader, is learner, raft term, raft index, raft applied index, errors.
"""  # noqa: E501


def commands() -> list[Command]:
    endpoint = Command(
        "endpoint <subcommand>",
        "Endpoint related commands",
        persistent_flags=[
            Flag("cluster", FlagKind.BOOL, False, "use all endpoints from the cluster member list")
        ],
    )
    endpoint.add(
        Command(
            "hashkv",
            "Prints the KV history hash for each endpoint in --endpoints",
            run=hashkv_command,
            persistent_flags=[
                Flag("rev", FlagKind.INT64, 0, "maximum revision to hash (default: all revisions)")
            ],
        ),
        Command(
            "health",
            "Checks the healthiness of endpoints specified in `--endpoints` flag",
            run=health_command,
        ),
        Command(
            "status",
            "Prints out the status of endpoints specified in `--endpoints` flag",
            run=status_command,
            long=STATUS_LONG,
        ),
    )
    return [endpoint]
