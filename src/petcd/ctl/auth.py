"""``auth enable|disable|status``, ``user ...`` and ``role ...``.

Theory of operation: user and role management over the Auth service, printed
as etcdctl 3.5 prints it. Passwords come from ``user:password``,
``--new-user-password``, a terminal prompt (asked twice) or, with
``--interactive=false``, the first word of stdin. ``auth enable`` creates the
``root`` role (and grants it to the ``root`` user) when the server says it is
missing, then retries, as etcdctl does. Permission ranges follow etcdctl:
``--prefix``, ``--from-key`` (``\\0`` = open end), or an explicit end key; an
empty key means the whole key space.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

from petcd.api.authpb import auth_pb2
from petcd.api.etcdserverpb import rpc_pb2
from petcd.client import ClientError, EtcdServerError, prefix_range_end
from petcd.ctl.command import Command, Flag, FlagKind
from petcd.ctl.context import Invocation
from petcd.ctl.errors import EXIT_BAD_ARGS, EXIT_ERROR, ExitError
from petcd.ctl.gofmt import go_json, go_quote, go_quote_bytes
from petcd.ctl.printer import (
    FieldsPrinter,
    JsonPrinter,
    ProtobufPrinter,
    SimplePrinter,
    make_printer,
    print_response,
)

_PERM_NAMES = {0: "READ", 1: "WRITE", 2: "READWRITE"}


def _call(inv: Invocation, method: str, request: Any) -> Any:
    client = inv.client()
    try:
        # etcdctl uses context.TODO() for these: no command timeout.
        return client.auth(method, request, timeout_s=3600.0)
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None


def _no_args(inv: Invocation, message: str) -> None:
    if inv.args:
        raise ExitError(EXIT_BAD_ARGS, message)


def _one_arg(inv: Invocation, message: str) -> str:
    """The one argument (a user or role name); ``message`` if there is not exactly one."""
    if len(inv.args) != 1:
        raise ExitError(EXIT_BAD_ARGS, message)
    return inv.args[0]


def _two_args(inv: Invocation, message: str) -> tuple[str, str]:
    """The user and the role name; ``message`` if there are not exactly two arguments."""
    if len(inv.args) != 2:
        raise ExitError(EXIT_BAD_ARGS, message)
    return inv.args[0], inv.args[1]


# ---------------------------------------------------------------- auth


def auth_enable_command(inv: Invocation) -> None:
    _no_args(inv, "auth enable command does not accept any arguments")
    client = inv.client()
    while True:
        try:
            client.auth("AuthEnable", rpc_pb2.AuthEnableRequest())
            break
        except EtcdServerError as exc:
            if exc.message != "etcdserver: root user does not have root role":
                raise ExitError(EXIT_ERROR, str(exc)) from None
            try:
                client.auth("RoleAdd", rpc_pb2.AuthRoleAddRequest(name="root"))
                client.auth(
                    "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root")
                )
            except ClientError as inner:
                raise ExitError(EXIT_ERROR, str(inner)) from None
        except ClientError as exc:
            raise ExitError(EXIT_ERROR, str(exc)) from None
    inv.out("Authentication Enabled\n")


def auth_disable_command(inv: Invocation) -> None:
    _no_args(inv, "auth disable command does not accept any arguments")
    _call(inv, "AuthDisable", rpc_pb2.AuthDisableRequest())
    inv.out("Authentication Disabled\n")


def auth_status_command(inv: Invocation) -> None:
    _no_args(inv, "auth status command does not accept any arguments")
    resp = _call(inv, "AuthStatus", rpc_pb2.AuthStatusRequest())

    def simple() -> None:
        inv.out(f"Authentication Status: {'true' if resp.enabled else 'false'}\n")
        inv.out(f"AuthRevision: {resp.authRevision}\n")

    print_response(inv, resp, simple, fields=False)


# ---------------------------------------------------------------- user


def _ask(inv: Invocation, prompt: str) -> str:
    inv.out(prompt)
    inv.stdout.flush()
    if inv.stdin.isatty():
        return getpass.getpass("")
    return os.fsdecode(inv.stdin.readline()).rstrip("\r\n")


def _read_password(inv: Invocation, name: str) -> str:
    if not inv.values["interactive"]:
        words = os.fsdecode(inv.stdin.read()).split()
        return words[0] if words else ""
    first = _ask(inv, f"Password of {name}: ")
    if not first:
        raise ExitError(EXIT_BAD_ARGS, "empty password")
    second = _ask(inv, f"Type password of {name} again for confirmation: ")
    if first != second:
        raise ExitError(EXIT_BAD_ARGS, "given passwords are different")
    return first


def user_add_command(inv: Invocation) -> None:
    arg = _one_arg(inv, "user add command requires user name as its argument")
    no_password = bool(inv.values["no-password"])
    password = ""
    if no_password:
        user = arg
    elif inv.values["new-user-password"]:
        user, password = arg, str(inv.values["new-user-password"])
    elif ":" in arg:
        user, password = arg.split(":", 1)
        if not user:
            raise ExitError(EXIT_BAD_ARGS, "empty user name is not allowed")
    else:
        user = arg
        password = _read_password(inv, arg)
    request = rpc_pb2.AuthUserAddRequest(
        name=user, password=password, options=auth_pb2.UserAddOptions(no_password=no_password)
    )
    resp = _call(inv, "UserAdd", request)
    print_response(inv, resp, lambda: inv.out(f"User {user} created\n"))


def user_delete_command(inv: Invocation) -> None:
    name = _one_arg(inv, "user delete command requires user name as its argument")
    resp = _call(inv, "UserDelete", rpc_pb2.AuthUserDeleteRequest(name=name))
    print_response(inv, resp, lambda: inv.out(f"User {name} deleted\n"))


def user_get_command(inv: Invocation) -> None:
    name = _one_arg(inv, "user get command requires user name as its argument")
    resp = _call(inv, "UserGet", rpc_pb2.AuthUserGetRequest(name=name))
    if inv.values["detail"]:
        inv.out(f"User: {name}\n")
        for role in resp.roles:
            inv.out("\n")
            role_resp = _call(inv, "RoleGet", rpc_pb2.AuthRoleGetRequest(role=role))
            print_role(inv, role, role_resp)
        return

    def simple() -> None:
        inv.out(f"User: {name}\nRoles:" + "".join(f" {r}" for r in resp.roles) + "\n")

    print_response(inv, resp, simple, fields=False)


def user_list_command(inv: Invocation) -> None:
    _no_args(inv, "user list command requires no arguments")
    resp = _call(inv, "UserList", rpc_pb2.AuthUserListRequest())
    print_response(inv, resp, lambda: inv.out("".join(f"{u}\n" for u in resp.users)), fields=False)


def user_passwd_command(inv: Invocation) -> None:
    name = _one_arg(inv, "user passwd command requires user name as its argument")
    password = _read_password(inv, name)
    request = rpc_pb2.AuthUserChangePasswordRequest(name=name, password=password)
    resp = _call(inv, "UserChangePassword", request)
    print_response(inv, resp, lambda: inv.out("Password updated\n"))


def user_grant_role_command(inv: Invocation) -> None:
    user, role = _two_args(
        inv, "user grant command requires user name and role name as its argument"
    )
    resp = _call(inv, "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user=user, role=role))
    print_response(inv, resp, lambda: inv.out(f"Role {role} is granted to user {user}\n"))


def user_revoke_role_command(inv: Invocation) -> None:
    user, role = _two_args(inv, "user revoke-role requires user name and role name as its argument")
    resp = _call(inv, "UserRevokeRole", rpc_pb2.AuthUserRevokeRoleRequest(name=user, role=role))
    print_response(inv, resp, lambda: inv.out(f"Role {role} is revoked from user {user}\n"))


# ---------------------------------------------------------------- role


def _perm_range_text(key: bytes, range_end: bytes) -> str:
    k, e = key.decode("utf-8", "surrogateescape"), range_end.decode("utf-8", "surrogateescape")
    text = f"\t[{k}, {e})" if range_end != b"\x00" else f"\t[{k}, <open ended>"
    if prefix_range_end(key) == range_end:
        text += f" (prefix {k})"
    return text + "\n"


def print_role(inv: Invocation, role: str, resp: Any) -> None:
    printer = make_printer(inv)
    if isinstance(printer, SimplePrinter):
        inv.out(f"Role {role}\nKV Read:\n")
        for wanted, title in (((0, 2), None), ((1, 2), "KV Write:\n")):
            if title:
                inv.out(title)
            for perm in resp.perm:
                if perm.permType not in wanted:
                    continue
                if not perm.range_end:
                    inv.out(b"\t" + perm.key + b"\n")
                else:
                    inv.out(_perm_range_text(perm.key, perm.range_end))
    elif isinstance(printer, FieldsPrinter):
        printer.hdr(resp)
        for perm in resp.perm:
            inv.out(f'"PermType" :  {_PERM_NAMES.get(perm.permType, str(perm.permType))}\n')
            printer.line("Key", go_quote_bytes(perm.key))
            printer.line("RangeEnd", go_quote_bytes(perm.range_end))
    elif isinstance(printer, JsonPrinter):
        inv.out(go_json(resp) + "\n")
    elif isinstance(printer, ProtobufPrinter):
        inv.out(resp.SerializeToString())
    else:
        printer.unsupported()


def role_add_command(inv: Invocation) -> None:
    role = _one_arg(inv, "role add command requires role name as its argument")
    resp = _call(inv, "RoleAdd", rpc_pb2.AuthRoleAddRequest(name=role))
    print_response(inv, resp, lambda: inv.out(f"Role {role} created\n"))


def role_delete_command(inv: Invocation) -> None:
    role = _one_arg(inv, "role delete command requires role name as its argument")
    resp = _call(inv, "RoleDelete", rpc_pb2.AuthRoleDeleteRequest(role=role))
    print_response(inv, resp, lambda: inv.out(f"Role {role} deleted\n"))


def role_get_command(inv: Invocation) -> None:
    role = _one_arg(inv, "role get command requires role name as its argument")
    print_role(inv, role, _call(inv, "RoleGet", rpc_pb2.AuthRoleGetRequest(role=role)))


def role_list_command(inv: Invocation) -> None:
    _no_args(inv, "role list command requires no arguments")
    resp = _call(inv, "RoleList", rpc_pb2.AuthRoleListRequest())
    printer = make_printer(inv)
    if isinstance(printer, FieldsPrinter):
        printer.hdr(resp)
        inv.out('"Roles" :' + "".join(f" {go_quote(r)}" for r in resp.roles) + "\n")
        return
    print_response(inv, resp, lambda: inv.out("".join(f"{r}\n" for r in resp.roles)))


def _perm_range(inv: Invocation, args: list[str]) -> tuple[bytes, bytes]:
    prefix, from_key = bool(inv.values["prefix"]), bool(inv.values["from-key"])
    key = os.fsencode(args[0])
    if not key:
        if prefix and from_key:
            raise ExitError(EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive")
        return b"\x00", (b"\x00" if prefix or from_key else b"")
    if len(args) == 1:
        if prefix:
            if from_key:
                raise ExitError(
                    EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive"
                )
            return key, prefix_range_end(key)
        return key, (b"\x00" if from_key else b"")
    if prefix:
        raise ExitError(EXIT_BAD_ARGS, "unexpected endkey argument with --prefix flag")
    if from_key:
        raise ExitError(EXIT_BAD_ARGS, "unexpected endkey argument with --from-key flag")
    return key, os.fsencode(args[1])


def role_grant_command(inv: Invocation) -> None:
    if len(inv.args) < 3:
        raise ExitError(
            EXIT_BAD_ARGS,
            "role grant command requires role name, permission type, and key [endkey] as its "
            "argument",
        )
    role, perm_name = inv.args[0], inv.args[1]
    perm_type = {v: k for k, v in _PERM_NAMES.items()}.get(perm_name.upper())
    if perm_type is None:
        raise ExitError(EXIT_BAD_ARGS, f"invalid permission type: {perm_name}")
    key, range_end = _perm_range(inv, inv.args[2:])
    perm = auth_pb2.Permission(permType=perm_type, key=key, range_end=range_end)  # type: ignore[arg-type]
    resp = _call(
        inv, "RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest(name=role, perm=perm)
    )
    print_response(inv, resp, lambda: inv.out(f"Role {role} updated\n"))


def role_revoke_command(inv: Invocation) -> None:
    if len(inv.args) < 2:
        raise ExitError(
            EXIT_BAD_ARGS,
            "role revoke-permission command requires role name and key [endkey] as its argument",
        )
    role = inv.args[0]
    key, range_end = _perm_range(inv, inv.args[1:])
    request = rpc_pb2.AuthRoleRevokePermissionRequest(role=role, key=key, range_end=range_end)
    resp = _call(inv, "RoleRevokePermission", request)
    key_text = inv.args[1]
    end_text = range_end.decode("utf-8", "surrogateescape")

    def simple() -> None:
        if not range_end:
            inv.out(f"Permission of key {key_text} is revoked from role {role}\n")
        elif range_end != b"\x00":
            inv.out(f"Permission of range [{key_text}, {end_text}) is revoked from role {role}\n")
        else:
            inv.out(f"Permission of range [{key_text}, <open ended> is revoked from role {role}\n")

    print_response(inv, resp, simple)


def commands() -> list[Command]:
    b, s = FlagKind.BOOL, FlagKind.STRING
    auth = Command("auth <enable or disable>", "Enable or disable authentication")
    auth.add(
        Command("enable", "Enables authentication", run=auth_enable_command),
        Command("disable", "Disables authentication", run=auth_disable_command),
        Command("status", "Returns authentication status", run=auth_status_command),
    )
    user = Command("user <subcommand>", "User related commands")
    user.add(
        Command(
            "add <user name or user:password> [options]",
            "Adds a new user",
            run=user_add_command,
            flags=[
                Flag(
                    "interactive",
                    b,
                    True,
                    "Read password from stdin instead of interactive terminal",
                ),
                Flag("new-user-password", s, "", "Supply password from the command line flag"),
                Flag(
                    "no-password", b, False, "Create a user without password (CN based auth only)"
                ),
            ],
        ),
        Command("delete <user name>", "Deletes a user", run=user_delete_command),
        Command(
            "get <user name> [options]",
            "Gets detailed information of a user",
            run=user_get_command,
            flags=[Flag("detail", b, False, "Show permissions of roles granted to the user")],
        ),
        Command("list", "Lists all users", run=user_list_command),
        Command(
            "passwd <user name> [options]",
            "Changes password of user",
            run=user_passwd_command,
            flags=[
                Flag(
                    "interactive",
                    b,
                    True,
                    "If true, read password from stdin instead of interactive terminal",
                )
            ],
        ),
        Command(
            "grant-role <user name> <role name>",
            "Grants a role to a user",
            run=user_grant_role_command,
        ),
        Command(
            "revoke-role <user name> <role name>",
            "Revokes a role from a user",
            run=user_revoke_role_command,
        ),
    )
    role = Command("role <subcommand>", "Role related commands")
    role.add(
        Command("add <role name>", "Adds a new role", run=role_add_command),
        Command("delete <role name>", "Deletes a role", run=role_delete_command),
        Command("get <role name>", "Gets detailed information of a role", run=role_get_command),
        Command("list", "Lists all roles", run=role_list_command),
        Command(
            "grant-permission [options] <role name> <permission type> <key> [endkey]",
            "Grants a key to a role",
            run=role_grant_command,
            flags=[
                Flag("prefix", b, False, "grant a prefix permission"),
                Flag(
                    "from-key",
                    b,
                    False,
                    "grant a permission of keys that are greater than or equal to the given key "
                    "using byte compare",
                ),
            ],
        ),
        Command(
            "revoke-permission <role name> <key> [endkey]",
            "Revokes a key from a role",
            run=role_revoke_command,
            flags=[
                Flag("prefix", b, False, "revoke a prefix permission"),
                Flag(
                    "from-key",
                    b,
                    False,
                    "revoke a permission of keys that are greater than or equal to the given key "
                    "using byte compare",
                ),
            ],
        ),
    )
    return [auth, user, role]
