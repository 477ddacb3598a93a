"""``lease grant|revoke|timetolive|list|keep-alive``.

Theory of operation: etcdctl prints lease responses from the Go client's own
structs, which embed the response header: so their JSON has the header fields
at the top level (``{"cluster_id":..,"ID":..,"TTL":..,"Error":""}``), with
Go field names or the client's json tags (``granted-ttl``), and their protobuf
output is only the header's bytes. This module reproduces those shapes. Lease
ids are hexadecimal on the command line and in simple output. Error codes
follow etcdctl: grant and revoke failures exit 1 with a "failed to ..." prefix,
timetolive, list and keep-alive failures exit 2 (bad connection).
"""

from __future__ import annotations

import base64
from typing import Any

from petcd.client import ClientError
from petcd.ctl.command import Command, Flag, FlagKind
from petcd.ctl.context import Invocation
from petcd.ctl.errors import EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR, ExitError
from petcd.ctl.gofmt import go_json, go_quote, go_quote_bytes, json_string
from petcd.ctl.printer import (
    FieldsPrinter,
    JsonPrinter,
    ProtobufPrinter,
    SimplePrinter,
    make_printer,
    print_response,
)


def _go_parse_int(text: str, base: int) -> int:
    digits = "0123456789abcdef"[:base]
    body = text[1:] if text[:1] in "+-" else text
    if not body or any(c not in digits for c in body.lower()):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(text)}: invalid syntax")
    value = int(text, base)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(text)}: value out of range")
    return value


def lease_from_arg(text: str) -> int:
    try:
        return _go_parse_int(text, 16)
    except ValueError as exc:
        raise ExitError(EXIT_BAD_ARGS, f"bad lease ID arg ({exc}), expecting ID in Hex") from None


def _lease_hex(lease_id: int) -> str:
    return f"{lease_id:016x}" if lease_id >= 0 else f"-{-lease_id:016x}"


def _header_json(resp: Any) -> str:
    """The embedded *ResponseHeader's fields, promoted to the top level."""
    return go_json(resp.header)[1:-1] if resp.HasField("header") else ""


def _embedded_json(resp: Any, fields: str) -> str:
    head = _header_json(resp)
    return "{" + (head + "," if head else "") + fields + "}\n"


def _go_bytes_list(keys: Any) -> str:
    if len(keys) == 0:
        return "null"
    return "[" + ",".join('"' + base64.b64encode(k).decode() + '"' for k in keys) + "]"


# ---------------------------------------------------------------- commands


def grant_command(inv: Invocation) -> None:
    if len(inv.args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "lease grant command needs TTL argument")
    try:
        ttl = _go_parse_int(inv.args[0], 10)
    except ValueError as exc:
        raise ExitError(EXIT_BAD_ARGS, f"bad TTL ({exc})") from None
    client = inv.client()
    try:
        resp = client.lease_grant(ttl)
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, f"failed to grant lease ({exc})") from None
    printer = make_printer(inv)
    if isinstance(printer, SimplePrinter):
        inv.out(f"lease {_lease_hex(resp.ID)} granted with TTL({resp.TTL}s)\n")
    elif isinstance(printer, JsonPrinter):
        inv.out(
            _embedded_json(
                resp, f'"ID":{resp.ID},"TTL":{resp.TTL},"Error":{json_string(resp.error)}'
            )
        )
    elif isinstance(printer, FieldsPrinter):
        printer.hdr(resp)
        printer.line("ID", resp.ID)
        printer.line("TTL", resp.TTL)
    elif isinstance(printer, ProtobufPrinter):
        inv.out(resp.header.SerializeToString())
    else:
        printer.unsupported()


def revoke_command(inv: Invocation) -> None:
    if len(inv.args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "lease revoke command needs 1 argument")
    lease_id = lease_from_arg(inv.args[0])
    client = inv.client()
    try:
        resp = client.lease_revoke(lease_id)
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, f"failed to revoke lease ({exc})") from None
    print_response(inv, resp, lambda: inv.out(f"lease {_lease_hex(lease_id)} revoked\n"))


def timetolive_command(inv: Invocation) -> None:
    if len(inv.args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "lease timetolive command needs lease ID as argument")
    lease_id = lease_from_arg(inv.args[0])
    keys = bool(inv.values["keys"])
    client = inv.client()
    try:
        # etcdctl uses context.TODO() here: no command timeout.
        resp = client.lease_time_to_live(lease_id, keys=keys, timeout_s=3600.0)
    except ClientError as exc:
        raise ExitError(EXIT_BAD_CONNECTION, str(exc)) from None
    printer = make_printer(inv)
    if isinstance(printer, SimplePrinter):
        if resp.grantedTTL == 0 and resp.TTL == -1:
            inv.out(f"lease {_lease_hex(resp.ID)} already expired\n")
            return
        text = (
            f"lease {_lease_hex(resp.ID)} granted with TTL({resp.grantedTTL}s), "
            f"remaining({resp.TTL}s)"
        )
        if keys:
            names = " ".join(k.decode("utf-8", "surrogateescape") for k in resp.keys)
            text += f", attached keys([{names}])"
        inv.out(text + "\n")
    elif isinstance(printer, JsonPrinter):
        inv.out(
            _embedded_json(
                resp,
                f'"id":{resp.ID},"ttl":{resp.TTL},"granted-ttl":{resp.grantedTTL},'
                f'"keys":{_go_bytes_list(resp.keys)}',
            )
        )
    elif isinstance(printer, FieldsPrinter):
        printer.hdr(resp)
        printer.line("ID", resp.ID)
        printer.line("TTL", resp.TTL)
        printer.line("GrantedTTL", resp.grantedTTL)
        for key in resp.keys:
            printer.line("Key", go_quote_bytes(key))
    elif isinstance(printer, ProtobufPrinter):
        inv.out(resp.header.SerializeToString())
    else:
        printer.unsupported()


def list_command(inv: Invocation) -> None:
    client = inv.client()
    try:
        resp = client.lease_leases(timeout_s=3600.0)
    except ClientError as exc:
        raise ExitError(EXIT_BAD_CONNECTION, str(exc)) from None
    printer = make_printer(inv)
    if isinstance(printer, SimplePrinter):
        inv.out(f"found {len(resp.leases)} leases\n")
        for item in resp.leases:
            inv.out(f"{_lease_hex(item.ID)}\n")
    elif isinstance(printer, JsonPrinter):
        items = ",".join(f'{{"id":{item.ID}}}' for item in resp.leases)
        inv.out(_embedded_json(resp, f'"leases":[{items}]'))
    elif isinstance(printer, FieldsPrinter):
        printer.hdr(resp)
        for item in resp.leases:
            printer.line("ID", item.ID)
    elif isinstance(printer, ProtobufPrinter):
        inv.out(resp.header.SerializeToString())
    else:
        printer.unsupported()


def _print_keep_alive(inv: Invocation, printer: Any, resp: Any) -> None:
    if isinstance(printer, SimplePrinter):
        inv.out(f"lease {_lease_hex(resp.ID)} keepalived with TTL({resp.TTL})\n")
    elif isinstance(printer, JsonPrinter):
        inv.out(_embedded_json(resp, f'"ID":{resp.ID},"TTL":{resp.TTL}'))
    elif isinstance(printer, FieldsPrinter):
        printer.hdr(resp)
        printer.line("ID", resp.ID)
        printer.line("TTL", resp.TTL)
    elif isinstance(printer, ProtobufPrinter):
        inv.out(resp.header.SerializeToString())
    else:
        printer.unsupported()
    inv.stdout.flush()


def keep_alive_command(inv: Invocation) -> None:
    if len(inv.args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "lease keep-alive command needs lease ID as argument")
    lease_id = lease_from_arg(inv.args[0])
    client = inv.client()
    if inv.values["once"]:
        try:
            resp = client.lease_keep_alive_once(lease_id, timeout_s=3600.0)
        except ClientError as exc:
            raise ExitError(EXIT_BAD_CONNECTION, str(exc)) from None
        if resp.TTL <= 0:
            raise ExitError(EXIT_BAD_CONNECTION, "etcdserver: requested lease not found")
        _print_keep_alive(inv, make_printer(inv), resp)
        return
    printer = make_printer(inv)
    try:
        for resp in client.lease_keep_alive(lease_id):
            _print_keep_alive(inv, printer, resp)
    except ClientError as exc:
        raise ExitError(EXIT_BAD_CONNECTION, str(exc)) from None
    if isinstance(printer, SimplePrinter):
        inv.out(f"lease {_lease_hex(lease_id)} expired or revoked.\n")


def commands() -> list[Command]:
    lease = Command("lease <subcommand>", "Lease related commands")
    lease.add(
        Command("grant <ttl>", "Creates leases", run=grant_command),
        Command("revoke <leaseID>", "Revokes leases", run=revoke_command),
        Command(
            "timetolive <leaseID> [options]",
            "Get lease information",
            run=timetolive_command,
            flags=[Flag("keys", FlagKind.BOOL, False, "Get keys attached to this lease")],
        ),
        Command("list", "List all active leases", run=list_command),
        Command(
            "keep-alive [options] <leaseID>",
            "Keeps leases alive (renew)",
            run=keep_alive_command,
            flags=[
                Flag(
                    "once",
                    FlagKind.BOOL,
                    False,
                    "Resets the keep-alive time to its original value and cobrautl.Exits "
                    "immediately",
                )
            ],
        ),
    )
    return [lease]
