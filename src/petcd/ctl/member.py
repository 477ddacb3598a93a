"""``member add|remove|update|list|promote``.

Theory of operation: member ids are hexadecimal on the command line and in
simple output (``Member %16x added to cluster %16x``: space-padded, as Go's
``%16x``). ``member list`` asks for a linearizable list (etcd 3.5's client
does) and prints rows of ID, status (``unstarted`` until the member has a
name), name, peer and client URLs and learner flag; with ``--hex`` its JSON
uses etcdctl 3.5's hand-written form (hex ids as strings, ``clientURLS``).
``member add`` in simple mode also prints the ``ETCD_*`` settings the new
member must start with. Only ``member list`` supports the fields and table
formats; the other subcommands send their request and then exit 4, as
etcdctl does.
"""

from __future__ import annotations

from typing import Any

from petcd.client import ClientError
from petcd.ctl.command import Command, Flag, FlagKind
from petcd.ctl.context import Invocation
from petcd.ctl.errors import EXIT_BAD_ARGS, EXIT_ERROR, ExitError
from petcd.ctl.gofmt import ascii_table, go_json, go_quote, json_string
from petcd.ctl.printer import (
    FieldsPrinter,
    JsonPrinter,
    ProtobufPrinter,
    SimplePrinter,
    TablePrinter,
    make_printer,
    print_response,
)

MEMBER_HEADER = ["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"]


def member_rows(resp: Any) -> list[list[str]]:
    return [
        [
            f"{m.ID:x}",
            "started" if m.name else "unstarted",
            m.name,
            ",".join(m.peerURLs),
            ",".join(m.clientURLs),
            "true" if m.isLearner else "false",
        ]
        for m in resp.members
    ]


def _member_id(text: str) -> int:
    body = text.lower()
    if not body or any(c not in "0123456789abcdef" for c in body):
        raise ExitError(
            EXIT_BAD_ARGS,
            f"bad member ID arg (strconv.ParseUint: parsing {go_quote(text)}: invalid syntax), "
            "expecting ID in Hex",
        )
    value = int(body, 16)
    if value >= 2**64:
        raise ExitError(
            EXIT_BAD_ARGS,
            f"bad member ID arg (strconv.ParseUint: parsing {go_quote(text)}: value out of "
            "range), expecting ID in Hex",
        )
    return value


def _json_strings(items: Any) -> str:
    # json.Marshal of a Go []string: null when nil (an empty repeated field).
    return "[" + ",".join(json_string(i) for i in items) + "]" if len(items) else "null"


def _hex_member_list_json(resp: Any) -> str:
    h = resp.header
    out = f'{{"header":{{"cluster_id":"{h.cluster_id:x}","member_id":"{h.member_id:x}"'
    out += f',"raft_term":{h.raft_term}}}'
    for i, m in enumerate(resp.members):
        out += ',"members":[{"ID":"' if i == 0 else ',{"ID":"'
        out += f'{m.ID:x}","name":"{m.name}","peerURLs":'
        out += _json_strings(m.peerURLs) + ',"clientURLS":' + _json_strings(m.clientURLs)
        out += "}"
        if i == len(resp.members) - 1:
            out += "]"
    return out + "}\n"


def list_command(inv: Invocation) -> None:
    client = inv.client()
    try:
        resp = client.member_list(linearizable=True)
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    printer = make_printer(inv)
    if isinstance(printer, SimplePrinter):
        for row in member_rows(resp):
            inv.out(", ".join(row) + "\n")
    elif isinstance(printer, JsonPrinter):
        inv.out(_hex_member_list_json(resp) if printer.hex else go_json(resp) + "\n")
    elif isinstance(printer, FieldsPrinter):
        printer.hdr(resp)
        for m in resp.members:
            printer.line("ID", m.ID)
            printer.line("Name", go_quote(m.name))
            for url in m.peerURLs:
                printer.line("PeerURL", go_quote(url))
            for url in m.clientURLs:
                printer.line("ClientURL", go_quote(url))
            printer.line("IsLearner", m.isLearner)
            inv.out("\n")
    elif isinstance(printer, TablePrinter):
        inv.out(ascii_table(MEMBER_HEADER, member_rows(resp)))
    else:
        assert isinstance(printer, ProtobufPrinter)
        inv.out(resp.SerializeToString())


def _print_change(inv: Invocation, resp: Any, verb: str, member_id: int) -> None:
    def simple() -> None:
        inv.out(f"Member {member_id:16x} {verb} cluster {resp.header.cluster_id:16x}\n")

    print_response(inv, resp, simple, fields=False)


def add_command(inv: Invocation) -> None:
    if not inv.args:
        raise ExitError(EXIT_BAD_ARGS, "member name not provided")
    if len(inv.args) > 1:
        message = "too many arguments"
        for arg in inv.args:
            if arg.lower().startswith("http"):
                message += f", did you mean --peer-urls={arg}"
        raise ExitError(EXIT_BAD_ARGS, message)
    name = inv.args[0]
    peer_urls = str(inv.values["peer-urls"])
    if not peer_urls:
        raise ExitError(EXIT_BAD_ARGS, "member peer urls not provided")
    client = inv.client()
    try:
        resp = client.member_add(peer_urls.split(","), is_learner=bool(inv.values["learner"]))
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    _print_change(inv, resp, "added to", resp.member.ID)
    if isinstance(make_printer(inv), SimplePrinter):
        conf = [
            f"{name if m.ID == resp.member.ID else m.name}={url}"
            for m in resp.members
            for url in m.peerURLs
        ]
        inv.out("\n")
        inv.out(f"ETCD_NAME={go_quote(name)}\n")
        inv.out(f"ETCD_INITIAL_CLUSTER={go_quote(','.join(conf))}\n")
        inv.out(f"ETCD_INITIAL_ADVERTISE_PEER_URLS={go_quote(peer_urls)}\n")
        inv.out('ETCD_INITIAL_CLUSTER_STATE="existing"\n')


def _id_command(inv: Invocation) -> int:
    if len(inv.args) != 1:
        raise ExitError(EXIT_BAD_ARGS, "member ID is not provided")
    return _member_id(inv.args[0])


def remove_command(inv: Invocation) -> None:
    member_id = _id_command(inv)
    client = inv.client()
    try:
        resp = client.member_remove(member_id)
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    _print_change(inv, resp, "removed from", member_id)


def update_command(inv: Invocation) -> None:
    member_id = _id_command(inv)
    peer_urls = str(inv.values["peer-urls"])
    if not peer_urls:
        raise ExitError(EXIT_BAD_ARGS, "member peer urls not provided")
    client = inv.client()
    try:
        resp = client.member_update(member_id, peer_urls.split(","))
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    _print_change(inv, resp, "updated in", member_id)


def promote_command(inv: Invocation) -> None:
    member_id = _id_command(inv)
    client = inv.client()
    try:
        resp = client.member_promote(member_id)
    except ClientError as exc:
        raise ExitError(EXIT_ERROR, str(exc)) from None
    _print_change(inv, resp, "promoted in", member_id)


MEMBER_LIST_LONG = """When --write-out is set to simple, this command prints out comma-separated member lists for each endpoint.
The items in the lists are ID, Status, Name, Peer Addrs, Client Addrs, Is Learner.
"""  # noqa: E501


def commands() -> list[Command]:
    member = Command("member <subcommand>", "Membership related commands")
    member.add(
        Command(
            "add <memberName> [options]",
            "Adds a member into the cluster",
            run=add_command,
            flags=[
                Flag(
                    "peer-urls",
                    FlagKind.STRING,
                    "",
                    "comma separated peer URLs for the new member.",
                ),
                Flag(
                    "learner", FlagKind.BOOL, False, "indicates if the new member is raft learner"
                ),
            ],
        ),
        Command("remove <memberID>", "Removes a member from the cluster", run=remove_command),
        Command(
            "update <memberID> [options]",
            "Updates a member in the cluster",
            run=update_command,
            flags=[
                Flag(
                    "peer-urls",
                    FlagKind.STRING,
                    "",
                    "comma separated peer URLs for the updated member.",
                )
            ],
        ),
        Command(
            "list", "Lists all members in the cluster", run=list_command, long=MEMBER_LIST_LONG
        ),
        Command(
            "promote <memberID>",
            "Promotes a non-voting member in the cluster",
            run=promote_command,
            long="Promotes a non-voting learner member to a voting one in the cluster.\n",
        ),
    )
    return [member]
