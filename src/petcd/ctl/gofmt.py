"""Go formatting rules that etcdctl's output depends on.

Theory of operation: etcdctl is a Go program, and its output is made by Go's
``fmt``, ``strconv``, ``encoding/json``, ``time.Duration.String``,
``text/tabwriter``, go-humanize and olekukonko/tablewriter. To print the same
bytes, this module re-implements the few rules petcdctl needs: quoting
(``%q``), JSON string escaping and marshalling of protobuf messages the way
``json.Marshal`` renders gogoproto structs (proto field names, omitempty,
base64 bytes, oneofs as ``{"Response":{"ResponsePut":...}}``), duration
strings, SI byte sizes, Go's tab writer and the ASCII table writer. Pure
functions, no I/O.
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from petcd.server.log import humanize_bytes as humanize_bytes  # re-exported

# ---------------------------------------------------------------- strconv.Quote


def _printable(ch: str) -> bool:
    # Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols and
    # the ASCII space; not other spaces, controls or unassigned code points.
    if ch == " ":
        return True
    return unicodedata.category(ch)[0] in "LMNPS"


# The characters strconv.Quote escapes by name (the quote, the backslash, the C escapes);
# every other one it escapes is written by its code.
_QUOTE_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote_bytes(data: bytes) -> str:
    """``strconv.Quote(string(data))``: Go's ``%q`` of a byte string."""
    out = ['"']
    text = data.decode("utf-8", errors="surrogateescape")
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in _QUOTE_ESCAPES:  # (none of them is printable but the quote and backslash)
            out.append(_QUOTE_ESCAPES[ch])
        elif _printable(ch):
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def go_quote(text: str) -> str:
    return go_quote_bytes(text.encode("utf-8", errors="surrogateescape"))


def go_unquote_prefix(text: str) -> tuple[str, str] | None:
    """Parse a Go double-quoted (or back-quoted) string at the start of ``text``.

    Returns ``(value, rest)`` or ``None`` when ``text`` does not start with a
    well-formed quoted string (what ``fmt.Sscanf("%q")`` accepts).
    """
    if not text:
        return None
    if text[0] == "`":
        end = text.find("`", 1)
        if end < 0:
            return None
        return text[1:end], text[end + 1 :]
    if text[0] != '"':
        return None
    out: list[str] = []
    i = 1
    simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return "".join(out), text[i + 1 :]
        if ch == "\n":
            return None
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        i += 1
        if i >= len(text):
            return None
        esc = text[i]
        if esc in simple:
            out.append(simple[esc])
            i += 1
        elif esc in "\\\"'":
            out.append(esc)
            i += 1
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = text[i + 1 : i + 1 + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                return None
            value = int(digits, 16)
            if esc == "x":
                out.append(chr(0xDC00 + value) if value >= 0x80 else chr(value))
            else:
                out.append(chr(value))
            i += 1 + width
        elif esc in "01234567":
            digits = text[i : i + 3]
            if len(digits) != 3 or any(c not in "01234567" for c in digits):
                return None
            value = int(digits, 8)
            out.append(chr(0xDC00 + value) if value >= 0x80 else chr(value))
            i += 3
        else:
            return None
    return None


# ---------------------------------------------------------------- encoding/json


# The characters encoding/json escapes by name; other control characters get ``\u00XX``.
_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def json_string(text: str) -> str:
    """A JSON string literal as Go's encoding/json writes it (HTML-safe escaping)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF or 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        elif ch in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[ch])
        elif code < 0x20 or ch in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _camel(name: str) -> str:
    # protoc-gen-gogo's Go field names: snake_case -> CamelCase.
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _json_scalar(field: FieldDescriptor, value: Any) -> str:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return json_string(base64.b64encode(value).decode("ascii"))
    if field.type == FieldDescriptor.TYPE_STRING:
        return json_string(value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return repr(float(value))
    return str(int(value))


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _json_field_value(field: FieldDescriptor, value: Any) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return go_json(value)
    return _json_scalar(field, value)


def go_json(message: Any) -> str:
    """``json.Marshal`` of the gogoproto Go struct for ``message``.

    Fields come in declaration order under their proto names; zero values, empty
    lists and unset messages are omitted (every etcd field is ``omitempty``); a
    set oneof appears once, at its first member's position, as
    ``"<Oneof>":{"<Member>":value}`` with Go's CamelCase names.
    """
    parts: list[str] = []
    seen_oneofs: set[str] = set()
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None:
            if oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(oneof.name)
            which = message.WhichOneof(oneof.name)
            if which is None:
                continue
            member = message.DESCRIPTOR.fields_by_name[which]
            inner = _json_field_value(member, getattr(message, which))
            parts.append(f'"{_camel(oneof.name)}":{{"{_camel(which)}":{inner}}}')
            continue
        value = getattr(message, field.name)
        if _is_repeated(field):
            if len(value) == 0:
                continue
            items = ",".join(_json_field_value(field, v) for v in value)
            parts.append(f'"{field.name}":[{items}]')
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if not message.HasField(field.name):
                continue
            parts.append(f'"{field.name}":{go_json(value)}')
        else:
            if not value:
                continue
            parts.append(f'"{field.name}":{_json_scalar(field, value)}')
    return "{" + ",".join(parts) + "}"


# ---------------------------------------------------------------- time.Duration


def go_duration(seconds: float) -> str:
    """``time.Duration.String()`` of a duration given in seconds."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim_fraction(ns, 1000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_trim_fraction(ns, 1_000_000)}ms"
    out = ""
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return f"{sign}{out}{_trim_fraction(rest, 10**9)}s"


def _trim_fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if frac == 0:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


def parse_go_duration(text: str) -> float:
    """Parse a Go duration (``2s``, ``1m30s``, ``500ms``) into seconds.

    Raises ``ValueError`` with Go's message (``time: invalid duration "x"``).
    """
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0}
    units |= {"m": 60.0, "h": 3600.0}
    orig = text
    error = ValueError(f"time: invalid duration {go_quote(orig)}")
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise error
    total = 0.0
    while text:
        i = 0
        while i < len(text) and (text[i].isdigit() or text[i] == "."):
            i += 1
        number = text[:i]
        if not number or number == "." or number.count(".") > 1:
            raise error
        text = text[i:]
        j = 0
        while j < len(text) and not (text[j].isdigit() or text[j] == "."):
            j += 1
        unit = text[:j]
        text = text[j:]
        if not unit:
            raise ValueError(f"time: missing unit in duration {go_quote(orig)}")
        if unit not in units:
            raise ValueError(f"time: unknown unit {go_quote(unit)} in duration {go_quote(orig)}")
        total += float(number) * units[unit]
    return sign * total


# ---------------------------------------------------------------- go-humanize
# ``humanize_bytes`` lives with the server's logger (petcd.server.log), which logs sizes too.


# ---------------------------------------------------------------- text/tabwriter


def tabwrite(text: str, tab_width: int = 8, padding: int = 1) -> str:
    """Go's ``tabwriter`` with ``minwidth 0, tabwidth 8, padding 1, padchar '\\t'``.

    Cells are the tab-terminated pieces of a line; a column's width is decided
    per block of consecutive lines that have a cell in that column, and cells
    are padded with tabs up to the column width rounded to ``tab_width``.
    """
    lines = text.split("\n")
    cells = [line.split("\t") for line in lines]
    widths: list[list[int]] = [[0] * (len(row) - 1) for row in cells]

    def format_block(start: int, end: int, column: int) -> None:
        # Lines [start, end) all have a terminated cell in `column`.
        i = start
        while i < end:
            width = 0
            j = i
            while j < end and len(cells[j]) - 1 > column:
                width = max(width, len(cells[j][column]) + padding)
                j += 1
            if j == i:
                i += 1
                continue
            width = (width + tab_width - 1) // tab_width * tab_width
            for k in range(i, j):
                widths[k][column] = width
            format_block(i, j, column + 1)
            i = j

    format_block(0, len(cells), 0)
    out_lines = []
    for row, row_widths in zip(cells, widths, strict=True):
        parts = []
        for cell, width in zip(row[:-1], row_widths, strict=True):
            pad = width - len(cell)
            parts.append(cell + "\t" * ((pad + tab_width - 1) // tab_width))
        parts.append(row[-1])
        out_lines.append("".join(parts))
    return "\n".join(out_lines)


# ---------------------------------------------------------------- tablewriter


def ascii_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """olekukonko/tablewriter as etcdctl configures it: upper-case centred
    header, right-aligned cells, ``+---+`` borders."""
    titles = [h.upper().replace("_", " ") for h in header]
    widths = [len(t) for t in titles]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def center(text: str, width: int) -> str:
        gap = width - len(text)
        left = gap // 2
        return " " * left + text + " " * (gap - left)

    lines = [border]
    lines.append(
        "|" + "|".join(f" {center(t, w)} " for t, w in zip(titles, widths, strict=True)) + "|"
    )
    lines.append(border)
    for row in rows:
        lines.append(
            "|" + "|".join(f" {c.rjust(w)} " for c, w in zip(row, widths, strict=True)) + "|"
        )
    lines.append(border)
    return "\n".join(lines) + "\n"
