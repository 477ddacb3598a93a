"""Authentication flags (``--user``, ``--password``) against an auth-enabled server."""

from __future__ import annotations

import pytest

from tests.compat.harness import Differ, run_ctl
from tests.compat.servers import ETCDCTL_BIN


def _setup_both(differ: Differ, *args: str) -> None:
    for server in (differ.reference, differ.target):
        result = run_ctl(ETCDCTL_BIN, server, args)
        assert result.code == 0, result


@pytest.mark.long  # a few seconds: many processes, see README
def test_user_and_password_flags(differ: Differ) -> None:
    differ.check("put", "secret", "s3")
    _setup_both(differ, "user", "add", "root:rootpw")
    _setup_both(differ, "user", "add", "alice:alicepw")
    _setup_both(differ, "role", "add", "reader")
    _setup_both(differ, "role", "grant-permission", "reader", "read", "secret")
    _setup_both(differ, "user", "grant-role", "alice", "reader")
    _setup_both(differ, "auth", "enable")
    try:
        differ.check("get", "secret")
        differ.check("get", "secret", "--user", "root:rootpw")
        differ.check("get", "secret", "--user", "root", "--password", "rootpw", "-w", "json")
        differ.check("get", "secret", "--user", "root:wrong")
        differ.check("get", "secret", "--user", "alice:alicepw")
        differ.check("put", "secret", "x", "--user", "alice:alicepw")
        differ.check("put", "secret", "x", "--user=root:rootpw")
        differ.check("get", "secret", env={"ETCDCTL_USER": "alice:alicepw"})
        differ.check("endpoint", "health", "--user", "root:rootpw", "-w", "json")
        differ.check("user", "get", "alice", "--user", "alice:alicepw")
        differ.check("user", "get", "root", "--user", "alice:alicepw")
        differ.check("role", "get", "reader", "--user", "alice:alicepw")
        differ.check("user", "list", "--user", "alice:alicepw")
        differ.check("del", "secret", "--user", "alice:alicepw")
        differ.check("user", "delete", "root", "--user", "root:rootpw")
        differ.check("role", "delete", "root", "--user", "root:rootpw")
        differ.check("user", "revoke-role", "root", "root", "--user", "root:rootpw")
        differ.check("auth", "enable", "--user", "root:rootpw")
        differ.check(
            "user",
            "passwd",
            "alice",
            "--interactive=false",
            "--user",
            "root:rootpw",
            stdin=b"newpw\n",
        )
        differ.check("get", "secret", "--user", "alice:alicepw")
        differ.check("get", "secret", "--user", "alice:newpw")
    finally:
        _setup_both(differ, "auth", "disable", "--user", "root:rootpw")
    differ.check("get", "secret")
    differ.check("get", "secret", "--user", "root:rootpw")
