"""Differential tests of ``auth``, ``user`` and ``role`` management commands.

(``auth status`` is new in etcd 3.5: neither the 3.4 etcdctl nor the 3.4 server
has it, so it is covered by the unit tests only.)
"""

from __future__ import annotations

from tests.compat.harness import Differ


def test_users_and_roles(differ: Differ) -> None:
    differ.check("user", "add", "bob:pw1")
    differ.check("user", "add", "bob:pw1")
    differ.check("user", "add", "carol", "--new-user-password", "pw2", "-w", "json")
    differ.check("user", "add", "dave", "--interactive=false", stdin=b"pw3 ignored\n")
    differ.check("user", "add", "erin", "--no-password", "-w", "fields")
    differ.check("user", "add", ":pw")
    differ.check("user", "add")
    differ.check("user", "list")
    differ.check("user", "list", "-w", "json")
    differ.check("user", "list", "-w", "fields")
    differ.check("role", "add", "viewer")
    differ.check("role", "add", "editor", "-w", "json")
    differ.check("role", "grant-permission", "viewer", "read", "app/", "--prefix")
    differ.check("role", "grant-permission", "viewer", "readwrite", "cfg", "cfh")
    differ.check("role", "grant-permission", "editor", "write", "logs/", "--from-key")
    differ.check("role", "grant-permission", "editor", "READ", "single")
    differ.check("role", "grant-permission", "editor", "READ", "", "--prefix")
    differ.check("role", "grant-permission", "editor", "admin", "x")
    differ.check("role", "grant-permission", "editor", "read")
    differ.check("role", "grant-permission", "editor", "read", "a", "b", "--prefix")
    differ.check("role", "get", "viewer")
    differ.check("role", "get", "editor")
    differ.check("role", "get", "editor", "-w", "json")
    differ.check("role", "get", "editor", "-w", "fields")
    differ.check("role", "get", "nobody")
    differ.check("role", "list")
    differ.check("role", "list", "-w", "fields")
    differ.check("user", "grant-role", "bob", "viewer")
    differ.check("user", "grant-role", "bob", "editor", "-w", "json")
    differ.check("user", "grant-role", "bob", "nobody")
    differ.check("user", "get", "bob")
    differ.check("user", "get", "bob", "--detail")
    differ.check("user", "get", "bob", "-w", "json")
    differ.check("user", "get", "bob", "-w", "fields")
    differ.check("user", "revoke-role", "bob", "editor")
    differ.check("user", "passwd", "bob", "--interactive=false", stdin=b"newpw\n")
    differ.check("get", "app/x", "--user", "bob:newpw")
    differ.check("role", "revoke-permission", "viewer", "app/", "--prefix")
    differ.check("role", "revoke-permission", "viewer", "cfg", "cfh")
    differ.check("role", "revoke-permission", "editor", "logs/", "--from-key")
    differ.check("role", "revoke-permission", "editor", "single", "-w", "json")
    differ.check("role", "revoke-permission", "editor", "nothing")
    differ.check("role", "delete", "editor")
    differ.check("role", "delete", "editor")
    differ.check("user", "delete", "carol")
    differ.check("user", "delete", "carol")
    differ.check("auth", "enable")  # no root user yet


def test_auth_enable_creates_the_root_role(differ: Differ) -> None:
    differ.check("user", "add", "root:rootpw")
    differ.check("auth", "enable")
    try:
        differ.check("role", "get", "root", "--user", "root:rootpw")
        differ.check("user", "list")
    finally:
        differ.check("auth", "disable", "--user", "root:rootpw")
    differ.check("user", "delete", "root")
    differ.check("role", "delete", "root")
