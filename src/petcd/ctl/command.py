"""A cobra/pflag-compatible command tree for ``petcdctl``.

Theory of operation: etcdctl is built on Go's cobra and pflag, and users (and
scripts) depend on their exact behaviour: interspersed flags, ``--flag=value``
and ``--flag value``, ``-wjson``, bool flags that take no value, ``--``, unique
command-name prefixes (``petcdctl ge foo``), ``-h/--help`` on every command, and
the error texts (``unknown flag: --bogus``, ``invalid argument "x" for "--limit"
flag: strconv.ParseInt: parsing "x": invalid syntax``). argparse differs on all
of these, so this module implements the small subset of cobra+pflag that
etcdctl uses, and renders help with etcdctl's own usage template (run through
Go's tab writer).

A :class:`Command` is a node: its ``flags`` are local, its
``persistent_flags`` are inherited by every command below it. :func:`resolve`
walks ``argv`` to the target command and parses every flag visible there into
an :class:`Invocation`. Parsing is pure: no I/O, no environment.
"""

from __future__ import annotations

import csv
import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from petcd.ctl.errors import FlagError
from petcd.ctl.gofmt import go_duration, go_quote, parse_go_duration, tabwrite

if TYPE_CHECKING:
    from petcd.ctl.context import Invocation


class FlagKind(enum.Enum):
    BOOL = "bool"
    STRING = "string"
    INT64 = "int64"
    UINT64 = "uint64"
    DURATION = "duration"
    STRING_SLICE = "stringSlice"


_INT64_MAX = 2**63 - 1


def parse_go_int(text: str, bits: int = 64, signed: bool = True) -> int:
    """``strconv.ParseInt(text, 0, 64)`` (or ParseUint), with Go's error texts."""
    func = "ParseInt" if signed else "ParseUint"
    body = text.replace("_", "") if text[1:2] in "xXoObB" and text[:1] == "0" else text
    negative = body.startswith("-")
    digits = body[1:] if body[:1] in "+-" else body
    try:
        if not signed and body[:1] in "+-":
            raise ValueError
        base = 10
        if digits[:2] in ("0x", "0X"):
            base, digits = 16, digits[2:]
        elif digits[:2] in ("0b", "0B"):
            base, digits = 2, digits[2:]
        elif digits[:2] in ("0o", "0O"):
            base, digits = 8, digits[2:]
        elif digits[:1] == "0" and len(digits) > 1:
            base, digits = 8, digits[1:]
        if not digits or not all(c.isascii() and c.isalnum() for c in digits):
            raise ValueError
        value = int(digits, base)
    except ValueError:
        raise ValueError(f"strconv.{func}: parsing {go_quote(text)}: invalid syntax") from None
    value = -value if negative else value
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if not lo <= value <= hi:
        raise ValueError(f"strconv.{func}: parsing {go_quote(text)}: value out of range")
    return value


def parse_go_bool(text: str) -> bool:
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(f"strconv.ParseBool: parsing {go_quote(text)}: invalid syntax")


@dataclass(frozen=True, slots=True)
class Flag:
    """One pflag flag: name, kind, default value and help text."""

    name: str
    kind: FlagKind
    default: Any
    usage: str
    shorthand: str = ""

    @property
    def is_bool(self) -> bool:
        return self.kind is FlagKind.BOOL

    def default_text(self) -> str:
        return format_flag_value(self.kind, self.default)

    def parse(self, text: str, previous: Any, changed: bool) -> Any:
        """The flag's new value after ``--name=text``; ValueError on bad input."""
        if self.kind is FlagKind.BOOL:
            return parse_go_bool(text)
        if self.kind is FlagKind.STRING:
            return text
        if self.kind is FlagKind.INT64:
            return parse_go_int(text)
        if self.kind is FlagKind.UINT64:
            return parse_go_int(text, signed=False)
        if self.kind is FlagKind.DURATION:
            return parse_go_duration(text)
        assert self.kind is FlagKind.STRING_SLICE
        items = next(csv.reader([text])) if text else []
        # pflag: the first Set replaces the default, later ones append.
        return [*previous, *items] if changed else items


def format_flag_value(kind: FlagKind, value: Any) -> str:
    """pflag's ``Value.String()``."""
    if kind is FlagKind.BOOL:
        return "true" if value else "false"
    if kind is FlagKind.DURATION:
        return go_duration(float(value))
    if kind is FlagKind.STRING_SLICE:
        return "[" + ",".join(value) + "]"
    return str(value)


HELP_FLAG_USAGE = "help for {name}"


@dataclass(eq=False)
class Command:
    """A node of the command tree (cobra.Command)."""

    use: str
    short: str
    run: Callable[[Invocation], int | None] | None = None
    long: str = ""
    flags: list[Flag] = field(default_factory=list)
    persistent_flags: list[Flag] = field(default_factory=list)
    subcommands: list[Command] = field(default_factory=list)
    parent: Command | None = None

    @property
    def name(self) -> str:
        return self.use.split(" ", 1)[0]

    @property
    def runnable(self) -> bool:
        return self.run is not None

    def add(self, *commands: Command) -> None:
        for command in commands:
            command.parent = self
            self.subcommands.append(command)
        self.subcommands.sort(key=lambda c: c.name)

    def ancestors(self) -> Iterator[Command]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def root(self) -> Command:
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def path(self) -> str:
        return " ".join([*(c.name for c in reversed(list(self.ancestors()))), self.name])

    def help_flag(self) -> Flag:
        return Flag("help", FlagKind.BOOL, False, HELP_FLAG_USAGE.format(name=self.name), "h")

    def local_flags(self) -> list[Flag]:
        return sorted([*self.flags, *self.persistent_flags, self.help_flag()], key=lambda f: f.name)

    def inherited_flags(self) -> list[Flag]:
        flags: dict[str, Flag] = {}
        for ancestor in self.ancestors():
            for flag in ancestor.persistent_flags:
                flags.setdefault(flag.name, flag)
        return sorted(flags.values(), key=lambda f: f.name)

    def all_flags(self) -> list[Flag]:
        return [*self.local_flags(), *self.inherited_flags()]

    def find_subcommand(self, name: str) -> Command | None:
        for command in self.subcommands:
            if command.name == name:
                return command
        # cobra.EnablePrefixMatching: a unique prefix selects the command.
        matches = [c for c in self.subcommands if c.name.startswith(name)]
        return matches[0] if len(matches) == 1 and name else None

    def help_target(self, words: Sequence[str]) -> Command:
        """The command ``help <words>`` shows (cobra's default help command): the one the
        words name below this one, as far as they name one."""
        target = self
        for word in words:
            nxt = target.find_subcommand(word)
            if nxt is None:
                break
            target = nxt
        return target


def levenshtein(a: str, b: str) -> int:
    """Edit distance, case-insensitive (cobra's ``ld(s, t, true)``)."""
    a, b = a.lower(), b.lower()
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            cur = min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
            prev, row[j] = row[j], cur
    return row[len(b)]


def suggestions_for(command: Command, typed: str) -> list[str]:
    """cobra's SuggestionsFor: close or prefix-matching available subcommands."""
    out = []
    for sub in command.subcommands:
        available = sub.name != "help" and (sub.runnable or bool(sub.subcommands))
        if not available:
            continue
        close = levenshtein(typed, sub.name) <= 2
        if close or sub.name.lower().startswith(typed.lower()):
            out.append(sub.name)
    return out


# ---------------------------------------------------------------- parsing


@dataclass
class Parsed:
    """The result of :func:`resolve`."""

    command: Command
    args: list[str]
    values: dict[str, Any]
    changed: set[str]
    help_requested: bool = False
    unknown_command: str | None = None


def _flag_lookup(flags: Sequence[Flag]) -> tuple[dict[str, Flag], dict[str, Flag]]:
    by_name = {f.name: f for f in flags}
    by_short = {f.shorthand: f for f in flags if f.shorthand}
    return by_name, by_short


def _strip_flags(args: Sequence[str], command: Command) -> list[str]:
    """cobra's stripFlags: the non-flag words, used to find the subcommand."""
    by_name, by_short = _flag_lookup(command.all_flags())
    words: list[str] = []
    rest = list(args)
    while rest:
        word = rest.pop(0)
        if word == "--":
            break
        if word.startswith("--") and "=" not in word and len(word) > 2:
            flag = by_name.get(word[2:])
            if (flag is None or not flag.is_bool) and rest:
                rest.pop(0)
            continue
        if word.startswith("-") and not word.startswith("--") and len(word) == 2:
            flag = by_short.get(word[1])
            if (flag is None or not flag.is_bool) and rest:
                rest.pop(0)
            continue
        if word.startswith("-") and len(word) > 1:
            continue
        words.append(word)
    return words


def resolve(root: Command, argv: Sequence[str]) -> Parsed:
    """Find the target command in ``argv`` and parse its flags.

    Raises :class:`FlagError` for anything pflag would reject; the command is
    attached to the error as ``error.command`` so that usage can be printed.
    """
    command = root
    args = list(argv)
    consumed: list[str] = []
    while True:
        words = _strip_flags(args, command)
        if not words:
            break
        nxt = command.find_subcommand(words[0])
        if nxt is None:
            break
        args.remove(words[0])
        consumed.append(words[0])
        command = nxt
    parsed = Parsed(command, [], {}, set())
    flags = command.all_flags()
    for flag in flags:
        parsed.values[flag.name] = flag.default
    try:
        _parse_flags(args, flags, parsed)
    except FlagError as exc:
        exc.command = command  # type: ignore[attr-defined]
        raise
    if command is root and parsed.args and root.subcommands and not parsed.help_requested:
        parsed.unknown_command = parsed.args[0]
    return parsed


def _set(flag: Flag, text: str, parsed: Parsed, spelled: str) -> None:
    try:
        value = flag.parse(text, parsed.values[flag.name], flag.name in parsed.changed)
    except ValueError as exc:
        raise FlagError(
            f"invalid argument {go_quote(text)} for {go_quote(spelled)} flag: {exc}"
        ) from None
    parsed.values[flag.name] = value
    parsed.changed.add(flag.name)
    if flag.name == "help" and value:
        parsed.help_requested = True


def _parse_flags(args: list[str], flags: Sequence[Flag], parsed: Parsed) -> None:
    by_name, by_short = _flag_lookup(flags)

    def spelled(flag: Flag) -> str:
        return f"-{flag.shorthand}, --{flag.name}" if flag.shorthand else f"--{flag.name}"

    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--":
            parsed.args.extend(args[i:])
            return
        if not word.startswith("-") or word == "-":
            parsed.args.append(word)
            continue
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            flag = by_name.get(name)
            if flag is None:
                raise FlagError(f"unknown flag: --{name}")
            if eq:
                _set(flag, value, parsed, spelled(flag))
            elif flag.is_bool:
                _set(flag, "true", parsed, spelled(flag))
            elif i < len(args):
                _set(flag, args[i], parsed, spelled(flag))
                i += 1
            else:
                raise FlagError(f"flag needs an argument: --{name}")
            continue
        shorts = word[1:]
        while shorts:
            char, remaining = shorts[0], shorts
            shorts = shorts[1:]
            flag = by_short.get(char)
            if flag is None:
                raise FlagError(f"unknown shorthand flag: '{char}' in -{remaining}")
            if shorts.startswith("="):
                _set(flag, shorts[1:], parsed, spelled(flag))
                shorts = ""
            elif flag.is_bool:
                _set(flag, "true", parsed, spelled(flag))
            elif shorts:
                _set(flag, shorts, parsed, spelled(flag))
                shorts = ""
            elif i < len(args):
                _set(flag, args[i], parsed, spelled(flag))
                i += 1
            else:
                raise FlagError(f"flag needs an argument: '{char}' in -{remaining}")


# ---------------------------------------------------------------- help


def _flag_usages(flags: Sequence[Flag]) -> str:
    lines = []
    for flag in flags:
        head = f"  -{flag.shorthand}, --{flag.name}" if flag.shorthand else f"      --{flag.name}"
        default = flag.default_text()
        value = go_quote(default) if flag.kind is FlagKind.STRING else default
        body = f"[={value}]" if flag.is_bool else f"={value}"
        lines.append(f"{head}{body}\t{flag.usage}\n")
    return "".join(lines)


def _all_subcommands(command: Command) -> Iterator[Command]:
    for sub in command.subcommands:
        yield sub
        yield from _all_subcommands(sub)


def use_line(command: Command) -> str:
    line = command.use
    if command.parent is not None:
        line = f"{command.parent.path()} {command.use}"
    if "[flags]" not in line:
        line += " [flags]"
    return line


def usage(command: Command, version: str, api_version: str) -> str:
    """etcdctl's usage text for ``command`` (pkg/cobrautl's template)."""
    root = command.root()

    def name_from(cmd: Command, start: Command) -> str:
        parts = [cmd.name]
        node = cmd
        while node.parent is not None and node.parent.name != start.name:
            node = node.parent
            parts.insert(0, node.name)
        return " ".join(parts)

    out = ["NAME:\n"]
    shown = command.name if command.parent is None else name_from(command, root)
    out.append(f"\t{shown} - {command.short}\n")
    out.append(f"\nUSAGE:\n\t{use_line(command)}\n")
    if command.parent is None:
        out.append(f"\nVERSION:\n\t{version}\n")
    if command.subcommands:
        out.append(f"\nAPI VERSION:\n\t{api_version}\n")
        out.append("\n\nCOMMANDS:\n")
        for sub in _all_subcommands(command):
            if sub.runnable:
                out.append(f"\t{name_from(sub, command)}\t{sub.short}\n")
    if command.long:
        out.append("\nDESCRIPTION:\n")
        for line in command.long.strip("\n\t ").split("\n"):
            out.append(f"\t{line}\n")
    out.append("\nOPTIONS:\n" + _flag_usages(command.local_flags()))
    inherited = command.inherited_flags()
    if inherited:
        out.append("\nGLOBAL OPTIONS:\n" + _flag_usages(inherited))
    out.append("\n")
    return tabwrite("".join(out))


# ---------------------------------------------------------------- cobra's default usage

_PFLAG_TYPE_NAMES = {
    FlagKind.BOOL: "",
    FlagKind.STRING: "string",
    FlagKind.INT64: "int",
    FlagKind.UINT64: "uint",
    FlagKind.DURATION: "duration",
    FlagKind.STRING_SLICE: "strings",
}
_ZERO_DEFAULTS = {
    FlagKind.BOOL: "false",
    FlagKind.STRING: "",
    FlagKind.INT64: "0",
    FlagKind.UINT64: "0",
    FlagKind.DURATION: "0s",
    FlagKind.STRING_SLICE: "[]",
}


def pflag_usages(flags: Sequence[Flag]) -> str:
    """pflag's ``FlagUsages``: aligned ``--name type   usage (default x)`` lines."""
    entries = []
    for flag in flags:
        head = f"  -{flag.shorthand}, --{flag.name}" if flag.shorthand else f"      --{flag.name}"
        type_name = _PFLAG_TYPE_NAMES[flag.kind]
        if type_name:
            head += " " + type_name
        text = flag.usage
        default = flag.default_text()
        if default != _ZERO_DEFAULTS[flag.kind]:
            shown = go_quote(default) if flag.kind is FlagKind.STRING else default
            text += f" (default {shown})"
        entries.append((head, text))
    width = max((len(head) + 1 for head, _ in entries), default=0)
    return "".join(f"{head} {' ' * (width - len(head))} {text}\n" for head, text in entries)


def cobra_default_usage(command: Command) -> str:
    """cobra's built-in usage template (used by etcdctl only inside ``txn``)."""
    parent_path = command.parent.path() if command.parent is not None else ""
    out = f"Usage:\n  {parent_path} {command.use}"
    if "[flags]" not in command.use:
        out += " [flags]"
    flags = pflag_usages(command.local_flags()).rstrip()
    out += f"\n\nFlags:\n{flags}\n"
    return out
