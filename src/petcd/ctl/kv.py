"""The key-value commands: ``get``, ``put``, ``del``, ``txn`` and ``compaction``.

Theory of operation: each command validates its arguments first (exit 128 with
etcdctl's text for a bad combination), then builds the protobuf request the
way etcd's Go client builds it (``WithPrefix``, ``WithFromKey``, ``WithSort``
which drops an ascending sort by key, ``WithLimit``...), then makes the client
(which reads the environment and ``-w``), sends the request, and only then
prints. The request builders (:func:`get_request`, :func:`put_request`,
:func:`delete_request`) are shared with ``txn``, whose operations use the same
syntax as the commands (``put k v --prev-kv``) but no global flags.
"""

from __future__ import annotations

import os
import re
from typing import Any, cast

from petcd.api.etcdserverpb import rpc_pb2
from petcd.client import ClientError, prefix_range_end
from petcd.ctl.command import Command, Flag, FlagKind, cobra_default_usage, resolve
from petcd.ctl.context import Invocation
from petcd.ctl.errors import (
    EXIT_BAD_ARGS,
    EXIT_BAD_FEATURE,
    EXIT_ERROR,
    EXIT_INVALID_INPUT,
    ExitError,
    FlagError,
)
from petcd.ctl.gofmt import go_quote, go_unquote_prefix
from petcd.ctl.printer import FieldsPrinter, SimplePrinter, make_printer

B = FlagKind.BOOL
S = FlagKind.STRING
I64 = FlagKind.INT64

GET_FLAGS = [
    Flag("consistency", S, "l", "Linearizable(l) or Serializable(s)"),
    Flag("order", S, "", "Order of results; ASCEND or DESCEND (ASCEND by default)"),
    Flag("sort-by", S, "", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION"),
    Flag("limit", I64, 0, "Maximum number of results"),
    Flag("prefix", B, False, "Get keys with matching prefix"),
    Flag(
        "from-key",
        B,
        False,
        "Get keys that are greater than or equal to the given key using byte compare",
    ),
    Flag("rev", I64, 0, "Specify the kv revision"),
    Flag("keys-only", B, False, "Get only the keys"),
    Flag("count-only", B, False, "Get only the count"),
    Flag("print-value-only", B, False, 'Only write values when using the "simple" output format'),
]

PUT_LONG = """
Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.
"""

PUT_FLAGS = [
    Flag("lease", S, "0", "lease ID (in hexadecimal) to attach to the key"),
    Flag("prev-kv", B, False, "return the previous key-value pair before modification"),
    Flag("ignore-value", B, False, "updates the key using its current value"),
    Flag("ignore-lease", B, False, "updates the key using its current lease"),
]

DEL_FLAGS = [
    Flag("prefix", B, False, "delete keys with matching prefix"),
    Flag("prev-kv", B, False, "return deleted key-value pairs"),
    Flag(
        "from-key",
        B,
        False,
        "delete keys that are greater than or equal to the given key using byte compare",
    ),
    Flag("range", B, False, "delete range of keys"),
]

DEL_RANGE_WARNING = (
    "In etcd v3.6, the operation will be suspended for a few seconds to provide the user "
    "time to verify range.\n"
)

GET_USE = "get [options] <key> [range_end]"
PUT_USE = "put [options] <key> <value> (<value> can also be given from stdin)"
DEL_USE = "del [options] <key> [range_end]"

_SORT_ORDERS = {"": 0, "ASCEND": 1, "DESCEND": 2}
_SORT_TARGETS = {"": 0, "KEY": 0, "VERSION": 1, "CREATE": 2, "MODIFY": 3, "VALUE": 4}


def _bad_args(message: str) -> ExitError:
    return ExitError(EXIT_BAD_ARGS, message)


def _client_error(exc: ClientError) -> ExitError:
    return ExitError(EXIT_ERROR, str(exc))


# ---------------------------------------------------------------- request builders


def _key_range(args: list[str], v: dict[str, Any]) -> tuple[bytes, bytes]:
    """The key and range end of get and del: ``<key> [range_end]``, ``--prefix`` or
    ``--from-key`` (with an empty key: every key)."""
    key = os.fsencode(args[0])
    range_end = b""
    if len(args) > 1:
        if v["prefix"] or v["from-key"]:
            raise _bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` "
                "is set"
            )
        range_end = os.fsencode(args[1])
    if v["prefix"]:
        if not key:
            key, range_end = b"\x00", b"\x00"
        else:
            range_end = prefix_range_end(key)
    if v["from-key"]:
        if not key:
            key = b"\x00"
        range_end = b"\x00"
    return key, range_end


def get_request(args: list[str], v: dict[str, Any]) -> Any:
    """etcdctl's getGetOp: validate and build the RangeRequest."""
    if not args:
        raise _bad_args(
            "get command needs one argument as key and an optional argument as range_end"
        )
    if v["prefix"] and v["from-key"]:
        raise _bad_args("`--prefix` and `--from-key` cannot be set at the same time, choose one")
    if v["keys-only"] and v["count-only"]:
        raise _bad_args(
            "`--keys-only` and `--count-only` cannot be set at the same time, choose one"
        )
    serializable = False
    if v["consistency"] == "s":
        serializable = True
    elif v["consistency"] != "l":
        raise ExitError(EXIT_BAD_FEATURE, f"unknown consistency flag {go_quote(v['consistency'])}")
    key, range_end = _key_range(args, v)
    order = _SORT_ORDERS.get(str(v["order"]).upper())
    if order is None:
        raise ExitError(EXIT_BAD_FEATURE, f"bad sort order {v['order']}")
    target = _SORT_TARGETS.get(str(v["sort-by"]).upper())
    if target is None:
        raise ExitError(EXIT_BAD_FEATURE, f"bad sort target {v['sort-by']}")
    if target == 0 and order == 1:
        order = 0  # clientv3.WithSort: the server already returns keys in ascending order
    return rpc_pb2.RangeRequest(
        key=key,
        range_end=range_end,
        limit=v["limit"],
        revision=v["rev"] if v["rev"] > 0 else 0,
        sort_order=cast(Any, order),
        sort_target=cast(Any, target),
        serializable=serializable,
        keys_only=v["keys-only"],
        count_only=v["count-only"],
    )


def _parse_hex_int64(text: str) -> int:
    body = text[1:] if text[:1] in "+-" else text
    if not body or any(c not in "0123456789abcdefABCDEF" for c in body):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(text)}: invalid syntax")
    value = int(text, 16)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(text)}: value out of range")
    return value


def put_request(args: list[str], v: dict[str, Any], stdin: Any) -> Any:
    """etcdctl's getPutOp: validate and build the PutRequest."""
    needs = "put command needs 1 argument and input from stdin or 2 arguments"
    if not args:
        raise _bad_args(needs)
    key = os.fsencode(args[0])
    if v["ignore-value"] and len(args) > 1:
        raise _bad_args("put command needs only 1 argument when 'ignore-value' is set")
    value = b""
    if not v["ignore-value"]:
        if len(args) > 1:
            value = os.fsencode(args[1])
        else:
            value = stdin.read() if stdin is not None else b""
            if not value:
                raise _bad_args(needs)
    try:
        lease = _parse_hex_int64(str(v["lease"]))
    except ValueError as exc:
        raise _bad_args(f"bad lease ID ({exc}), expecting ID in Hex") from None
    return rpc_pb2.PutRequest(
        key=key,
        value=value,
        lease=lease,
        prev_kv=v["prev-kv"],
        ignore_value=v["ignore-value"],
        ignore_lease=v["ignore-lease"],
    )


def delete_request(args: list[str], v: dict[str, Any], warn: Any) -> Any:
    """etcdctl's getDelOp: validate and build the DeleteRangeRequest."""
    if not args or len(args) > 2:
        raise _bad_args(
            "del command needs one argument as key and an optional argument as range_end"
        )
    if v["prefix"] and v["from-key"]:
        raise _bad_args("`--prefix` and `--from-key` cannot be set at the same time, choose one")
    key, range_end = _key_range(args, v)
    if len(args) > 1 and not v["range"]:
        warn(DEL_RANGE_WARNING)
    return rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end, prev_kv=v["prev-kv"])


# ---------------------------------------------------------------- commands


def get_command(inv: Invocation) -> None:
    request = get_request(inv.args, inv.values)
    client = inv.client()
    try:
        resp = client.range(request)
    except ClientError as exc:
        raise _client_error(exc) from None
    printer = make_printer(inv)
    if inv.values["count-only"] and not isinstance(printer, FieldsPrinter):
        raise _bad_args("--count-only is only for `--write-out=fields`")
    if inv.values["print-value-only"]:
        if not isinstance(printer, SimplePrinter):
            raise _bad_args("print-value-only is only for `--write-out=simple`")
        printer.value_only = True
    printer.get(resp)


def put_command(inv: Invocation) -> None:
    request = put_request(inv.args, inv.values, inv.stdin)
    client = inv.client()
    try:
        resp = client.put(
            request.key,
            request.value,
            lease=request.lease,
            prev_kv=request.prev_kv,
            ignore_value=request.ignore_value,
            ignore_lease=request.ignore_lease,
        )
    except ClientError as exc:
        raise _client_error(exc) from None
    make_printer(inv).put(resp)


def del_command(inv: Invocation) -> None:
    request = delete_request(inv.args, inv.values, inv.err)
    client = inv.client()
    try:
        resp = client.delete(request.key, request.range_end, prev_kv=request.prev_kv)
    except ClientError as exc:
        raise _client_error(exc) from None
    make_printer(inv).delete(resp)


def compaction_command(inv: Invocation) -> None:
    if len(inv.args) != 1:
        raise _bad_args("compaction command needs 1 argument")
    text = inv.args[0]
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ExitError(EXIT_ERROR, f"strconv.ParseInt: parsing {go_quote(text)}: invalid syntax")
    revision = int(text)
    if not -(2**63) <= revision < 2**63:
        raise ExitError(
            EXIT_ERROR, f"strconv.ParseInt: parsing {go_quote(text)}: value out of range"
        )
    client = inv.client()
    try:
        client.compact(revision, physical=bool(inv.values["physical"]))
    except ClientError as exc:
        raise _client_error(exc) from None
    inv.out(f"compacted revision {revision}\n")


# ---------------------------------------------------------------- txn

_ARG_RE = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?""")


def argify(line: str) -> list[str]:
    """Split a txn request line like etcdctl: quotes group, "..." is Go-unquoted."""
    args = _ARG_RE.findall(line)
    out = []
    for arg in args:
        if arg.startswith("'"):
            out.append(arg[1:-1])
        elif arg.startswith('"'):
            parsed = go_unquote_prefix(arg)
            if parsed is None:
                raise ExitError(EXIT_INVALID_INPUT, "invalid syntax")
            out.append(parsed[0])
        else:
            out.append(arg)
    return out


_COMPARE_RESULTS = {"=": 0, ">": 1, "<": 2, "!=": 3}


def parse_compare(line: str) -> Any:
    """One compare line: ``<target>("<key>") <op> "<value>"``."""
    target, paren, rest = line.partition("(")
    if not paren:
        raise ExitError(EXIT_INVALID_INPUT, f"malformed comparison: {line}")
    scanned: list[str] = []
    err: str | None = None
    text = rest.lstrip(" ")
    key = go_unquote_prefix(text)
    if key is not None and key[1].startswith(")"):
        scanned.append(key[0])
        text = key[1][1:].lstrip(" ")
        op = text.split(" ", 1)[0] if text else ""
        if op:
            scanned.append(op)
            text = text[len(op) :].lstrip(" ")
            value = go_unquote_prefix(text)
            if value is not None:
                scanned.append(value[0])
            else:
                err = "bad quoted string" if text else "unexpected EOF"
        else:
            err = "unexpected EOF"
    else:
        err = "bad quoted string" if text else "unexpected EOF"
    if len(scanned) != 3:
        padded = [*scanned, "", "", ""][:3]
        raise ExitError(
            EXIT_INVALID_INPUT,
            f"malformed comparison: {line}; got {target}({go_quote(padded[0])}) {padded[1]} "
            f"{go_quote(padded[2])}",
        )
    assert err is None
    key_text, op, value_text = scanned
    result = _COMPARE_RESULTS.get(op)
    cmp = rpc_pb2.Compare(key=os.fsencode(key_text))
    if target in ("ver", "version", "c", "create", "m", "mod"):
        if not re.fullmatch(r"[+-]?[0-9]+", value_text) or not -(2**63) <= int(value_text) < 2**63:
            raise ExitError(EXIT_INVALID_INPUT, f"invalid txn compare request: {line}")
        number = int(value_text)
        if target in ("ver", "version"):
            cmp.target, cmp.version = rpc_pb2.Compare.VERSION, number
        elif target in ("c", "create"):
            cmp.target, cmp.create_revision = rpc_pb2.Compare.CREATE, number
        else:
            cmp.target, cmp.mod_revision = rpc_pb2.Compare.MOD, number
    elif target in ("val", "value"):
        cmp.target, cmp.value = rpc_pb2.Compare.VALUE, os.fsencode(value_text)
    elif target == "lease":
        # etcdctl 3.5 hands the string to clientv3.Compare, which panics.
        raise ExitError(2, "panic: bad value")
    else:
        raise ExitError(
            EXIT_INVALID_INPUT, f"malformed comparison: {line} (unknown target {target})"
        )
    if result is None:
        raise ExitError(2, "panic: Unknown result op")
    cmp.result = cast(Any, result)
    return cmp


def _op_root() -> Command:
    root = Command("", "")
    root.add(
        Command(PUT_USE, "", run=lambda inv: None, flags=PUT_FLAGS),
        Command(GET_USE, "", run=lambda inv: None, flags=GET_FLAGS),
        Command(DEL_USE, "", run=lambda inv: None, flags=DEL_FLAGS),
    )
    return root


def parse_request_op(line: str, warn: Any) -> Any:
    """One txn operation line (``get``/``put``/``del`` with their flags)."""
    args = argify(line)
    if len(args) < 2:
        raise ExitError(EXIT_INVALID_INPUT, f"invalid txn compare request: {line}")
    try:
        parsed = resolve(_op_root(), args)
    except FlagError as exc:
        # cobra prints the op command's default usage on stderr before etcdctl's error.
        command = getattr(exc, "command", None)
        if command is not None and command.parent is not None:
            warn(cobra_default_usage(command) + "\n")
        raise ExitError(EXIT_INVALID_INPUT, f"invalid txn request: {line}") from None
    name = parsed.command.name
    if parsed.help_requested or name not in ("put", "get", "del"):
        raise ExitError(EXIT_INVALID_INPUT, f"invalid txn request: {line}")
    if name == "put":
        return rpc_pb2.RequestOp(request_put=put_request(parsed.args, parsed.values, None))
    if name == "get":
        return rpc_pb2.RequestOp(request_range=get_request(parsed.args, parsed.values))
    return rpc_pb2.RequestOp(request_delete_range=delete_request(parsed.args, parsed.values, warn))


def _read_section(inv: Invocation, parse: Any) -> list[Any]:
    items: list[Any] = []
    while True:
        raw = inv.stdin.readline()
        if not raw.endswith(b"\n"):
            raise ExitError(EXIT_INVALID_INPUT, "EOF")
        line = os.fsdecode(raw).strip()
        if not line:
            return items
        items.append(parse(line))


def txn_command(inv: Invocation) -> None:
    if inv.args:
        raise _bad_args("txn command does not accept argument")
    client = inv.client()
    interactive = bool(inv.values["interactive"])

    def prompt(text: str) -> None:
        if interactive:
            inv.out(text + "\n")
            inv.stdout.flush()

    prompt("compares:")
    compares = _read_section(inv, parse_compare)
    prompt("success requests (get, put, del):")
    success = _read_section(inv, lambda line: parse_request_op(line, inv.err))
    prompt("failure requests (get, put, del):")
    failure = _read_section(inv, lambda line: parse_request_op(line, inv.err))
    try:
        # etcdctl commits the txn with context.Background(): no command timeout.
        resp = client.txn(compares, success, failure, timeout_s=3600.0)
    except ClientError as exc:
        raise _client_error(exc) from None
    make_printer(inv).txn(resp)


def commands() -> list[Command]:
    return [
        Command(
            GET_USE,
            "Gets the key or a range of keys",
            run=get_command,
            flags=GET_FLAGS,
        ),
        Command(
            PUT_USE,
            "Puts the given key into the store",
            run=put_command,
            long=PUT_LONG,
            flags=PUT_FLAGS,
        ),
        Command(
            DEL_USE,
            "Removes the specified key or range of keys [key, range_end)",
            run=del_command,
            flags=DEL_FLAGS,
        ),
        Command(
            "txn [options]",
            "Txn processes all the requests in one transaction",
            run=txn_command,
            flags=[
                Flag("interactive", B, False, "Input transaction in interactive mode", "i"),
            ],
        ),
        Command(
            "compaction [options] <revision>",
            "Compacts the event history in etcd",
            run=compaction_command,
            flags=[
                Flag(
                    "physical",
                    B,
                    False,
                    "'true' to wait for compaction to physically remove all old revisions",
                )
            ],
        ),
    ]
