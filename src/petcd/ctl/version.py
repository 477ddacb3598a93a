"""``version``: the etcdctl version petcdctl stands in for, and the API version."""

from __future__ import annotations

import petcd
from petcd.ctl.command import Command
from petcd.ctl.context import Invocation


def api_version() -> str:
    major, minor = petcd.ETCD_VERSION.split(".")[:2]
    return f"{major}.{minor}"


def version_command(inv: Invocation) -> None:
    inv.out(f"etcdctl version: {petcd.ETCD_VERSION}\nAPI version: {api_version()}\n")


def commands() -> list[Command]:
    return [Command("version", "Prints the version of etcdctl", run=version_command)]
