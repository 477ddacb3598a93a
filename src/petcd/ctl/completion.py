"""Shell completion: ``petcdctl completion bash|zsh|fish`` and the ``__complete`` helper.

Theory of operation: the scripts are thin. On each Tab the shell runs
``petcdctl __complete <words before the cursor> <word at the cursor>`` (``__completeNoDesc``
for no descriptions), and this module answers from the command tree itself, so completion
always matches the installed petcdctl: one candidate per line (``name<TAB>description`` unless
descriptions are off), then ``:<bits>`` where the bits say what the shell should do besides:

* ``NO_SPACE`` (1): do not add a space after the candidate;
* ``NO_FILES`` (2): offer no file names when there is no candidate;
* ``ERROR`` (4): something failed; offer nothing.

Candidates are subcommands (with their short help), flags (``--name``; ``-x`` too when only
``-`` was typed) and the values of flags whose values are a closed set (``--write-out``,
``--consistency``, ``--sort-by``, ``--order``, ``--load``); the file flags (``--cacert``,
``--cert``, ``--key``, ``--data-dir``) and a leaf command's arguments fall back to file names,
everything else (keys, ids, counts) completes to nothing. The protocol is petcd's own, spoken
only between these scripts and petcdctl. PowerShell is not offered.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from petcd.ctl.command import Command, Flag, FlagKind
from petcd.ctl.context import Invocation
from petcd.ctl.errors import EXIT_BAD_ARGS, ExitError

NO_SPACE = 1
NO_FILES = 2
ERROR = 4

COMPLETE = "__complete"
COMPLETE_NO_DESC = "__completeNoDesc"
PROGRAM = "petcdctl"

# Flags whose values are a closed set, and flags that name files or directories.
_VALUES: dict[str, tuple[str, ...]] = {
    "write-out": ("simple", "json", "fields", "protobuf", "table"),
    "consistency": ("l", "s"),
    "sort-by": ("CREATE", "KEY", "MODIFY", "VALUE", "VERSION"),
    "order": ("ASCEND", "DESCEND"),
    "load": ("s", "m", "l", "xl"),
}
_FILE_FLAGS = frozenset({"cacert", "cert", "key", "data-dir", "wal-dir", "dest-cacert"})
_FILE_FLAGS |= {"dest-cert", "dest-key"}

Candidate = tuple[str, str]


def _visible_flags(command: Command) -> dict[str, Flag]:
    return {f.name: f for f in (*command.local_flags(), *command.inherited_flags())}


def _by_shorthand(flags: dict[str, Flag], letter: str) -> Flag | None:
    return next((f for f in flags.values() if f.shorthand == letter), None)


def _values(flag: Flag, typed: str, prefix: str = "") -> tuple[list[Candidate], int]:
    if flag.name in _FILE_FLAGS:
        return [], 0
    if flag.kind is FlagKind.BOOL:
        values: tuple[str, ...] = ("true", "false")
    else:
        values = _VALUES.get(flag.name, ())
    return [(prefix + v, "") for v in values if v.startswith(typed)], NO_FILES


def complete(root: Command, args: Sequence[str], typed: str) -> tuple[list[Candidate], int]:
    """Candidates for the word ``typed`` at the cursor after ``args``, and the bits."""
    command = root
    pending: Flag | None = None  # a flag that takes the next word as its value
    only_args = False
    for arg in args:
        if pending is not None:
            pending = None
            continue
        if only_args or arg == "-" or not arg.startswith("-"):
            sub = None if only_args else command.find_subcommand(arg)
            if sub is not None:
                command = sub
            continue
        if arg == "--":
            only_args = True
            continue
        flags = _visible_flags(command)
        if arg.startswith("--"):
            name, eq, _ = arg[2:].partition("=")
            flag = flags.get(name)
            if flag is not None and not flag.is_bool and not eq:
                pending = flag
        else:
            flag = _by_shorthand(flags, arg[1:2])
            if flag is not None and not flag.is_bool and len(arg) == 2:
                pending = flag
    flags = _visible_flags(command)
    if pending is not None:
        return _values(pending, typed)
    if typed.startswith("-") and not only_args:
        if typed.startswith("--") and "=" in typed:
            name, _, value = typed[2:].partition("=")
            flag = flags.get(name)
            if flag is None:
                return [], NO_FILES
            return _values(flag, value, f"--{name}=")
        out = [(f"--{f.name}", f.usage) for f in flags.values() if f"--{f.name}".startswith(typed)]
        if typed == "-":
            out += [(f"-{f.shorthand}", f.usage) for f in flags.values() if f.shorthand]
        return sorted(out), NO_FILES
    if command.subcommands:
        return [
            (c.name, c.short) for c in command.subcommands if c.name.startswith(typed)
        ], NO_FILES
    if command.name == "help" and command.parent is root:
        return [(c.name, c.short) for c in root.subcommands if c.name.startswith(typed)], NO_FILES
    return [], 0  # a leaf command's arguments: file names, the shell's default


def run_complete(
    root: Command, argv: Sequence[str], out: Callable[[str], object], descriptions: bool
) -> int:
    """``__complete`` / ``__completeNoDesc``: print the candidates and the bits; exit 0."""
    args, typed = list(argv[:-1]), argv[-1] if argv else ""
    try:
        candidates, bits = complete(root, args, typed)
    except Exception as exc:  # completion must never print a traceback into a shell
        out(f":{ERROR}\n")
        out(f"# {type(exc).__name__}: {exc}\n")
        return 0
    for name, text in candidates:
        summary = " ".join(text.split()) if descriptions else ""
        out(f"{name}\t{summary}\n" if summary else f"{name}\n")
    out(f":{bits}\n")
    return 0


# --- the scripts ------------------------------------------------------------------------------

_BASH = r"""# bash completion for petcdctl (from `petcdctl completion bash`)
_petcdctl_complete() {
    local line=${COMP_LINE:0:COMP_POINT}
    local -a words
    read -r -a words <<<"$line"
    local typed=""
    if [[ $line != *[[:space:]] ]] && ((${#words[@]} > 1)); then
        typed=${words[-1]}
        unset 'words[-1]'
    fi
    local answer
    answer=$("${words[0]}" __completeNoDesc "${words[@]:1}" "$typed" 2>/dev/null) || return
    local bits=${answer##*:}
    answer=${answer%:*}
    [[ $bits =~ ^[0-9]+$ ]] || return
    ((bits & 4)) && return
    # bash splits the word at the cursor at '=' and ':': drop what it left out of it.
    local cur=${COMP_WORDS[COMP_CWORD]}
    local head=${typed%"$cur"}
    COMPREPLY=()
    local candidate
    while IFS= read -r candidate; do
        [[ -n $candidate && $candidate == "$typed"* ]] && COMPREPLY+=("${candidate#"$head"}")
    done <<<"$answer"
    ((bits & 1)) && compopt -o nospace 2>/dev/null
    if ((${#COMPREPLY[@]} == 0)) && ! ((bits & 2)); then
        compopt -o default 2>/dev/null
    fi
    return 0
}
complete -o bashdefault -F _petcdctl_complete PROGRAM
"""

_ZSH = r"""#compdef PROGRAM
# zsh completion for petcdctl (from `petcdctl completion zsh`)
_petcdctl() {
    local -a lines names descs
    local answer bits line
    answer=$(${words[1]} HELPER ${(@)words[2,CURRENT-1]} "${words[CURRENT]}" 2>/dev/null) ||
        return 1
    lines=("${(@f)answer}")
    bits=${lines[-1]#:}
    lines=("${(@)lines[1,-2]}")
    [[ $bits == <-> ]] || return 1
    (( bits & 4 )) && return 1
    for line in $lines; do
        [[ -z $line ]] && continue
        names+=("${line%%$'\t'*}")
        if [[ $line == *$'\t'* ]]; then
            descs+=("${line%%$'\t'*} -- ${line#*$'\t'}")
        else
            descs+=("${line}")
        fi
    done
    if (( ${#names} )); then
        local -a opts
        (( bits & 1 )) && opts=(-S '')
        compadd -Q $opts -l -d descs -a names
        return 0
    fi
    (( bits & 2 )) && return 1
    _files
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _petcdctl "$@"
else
    compdef _petcdctl PROGRAM
fi
"""

_FISH = r"""# fish completion for petcdctl (from `petcdctl completion fish`)
function __petcdctl_complete
    set -l words (commandline -opc)
    set -l typed (commandline -ct)
    set -l answer ($words[1] HELPER $words[2..-1] "$typed" 2>/dev/null)
    or return
    set -l bits (string replace -r '^:' '' -- $answer[-1])
    string match -qr '^[0-9]+$' -- $bits; or return
    test (math "bitand($bits, 4)") -ne 0; and return
    set -l found 0
    for line in $answer[1..-2]
        test -n "$line"; or continue
        echo $line
        set found 1
    end
    if test $found -eq 0; and test (math "bitand($bits, 2)") -eq 0
        __fish_complete_path "$typed"
    end
end
complete -c PROGRAM -f -a '(__petcdctl_complete)'
"""

SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}

_HOW_TO_LOAD = {
    "bash": (
        "It needs bash 4.3 or later (and works with or without the bash-completion package);\n"
        "bash shows no descriptions, so --no-descriptions changes nothing there.\n\n"
        "To load completions in your current shell session:\n\n"
        "\tsource <(petcdctl completion bash)\n\n"
        "To load completions for every new session, run once:\n\n"
        "\tpetcdctl completion bash > /etc/bash_completion.d/petcdctl\n\n"
        "and start a new shell."
    ),
    "zsh": (
        "If shell completion is not already enabled in your environment you will need\n"
        "to enable it. You can execute the following once:\n\n"
        '\techo "autoload -U compinit; compinit" >> ~/.zshrc\n\n'
        "To load completions in your current shell session:\n\n"
        "\tsource <(petcdctl completion zsh)\n\n"
        "To load completions for every new session, run once:\n\n"
        '\tpetcdctl completion zsh > "${fpath[1]}/_petcdctl"\n\n'
        "and start a new shell."
    ),
    "fish": (
        "To load completions in your current shell session:\n\n"
        "\tpetcdctl completion fish | source\n\n"
        "To load completions for every new session, run once:\n\n"
        "\tpetcdctl completion fish > ~/.config/fish/completions/petcdctl.fish\n\n"
        "and start a new shell."
    ),
}


def script(shell: str, *, descriptions: bool = True) -> str:
    helper = COMPLETE if descriptions else COMPLETE_NO_DESC
    return SCRIPTS[shell].replace("PROGRAM", PROGRAM).replace("HELPER", helper)


def _command_for(shell: str) -> Command:
    def run(inv: Invocation) -> None:
        if inv.args:
            raise ExitError(EXIT_BAD_ARGS, f"completion {shell} accepts no arguments")
        inv.out(os.fsencode(script(shell, descriptions=not inv.values["no-descriptions"])))

    long = f"Generate the autocompletion script for petcdctl for the {shell} shell.\n\n"
    return Command(
        shell,
        f"Generate the autocompletion script for {shell}",
        run=run,
        long=long + _HOW_TO_LOAD[shell],
        flags=[Flag("no-descriptions", FlagKind.BOOL, False, "disable completion descriptions")],
    )


def commands() -> list[Command]:
    completion = Command(
        "completion",
        "Generate the autocompletion script for the specified shell",
        long="Generate the autocompletion script for petcdctl for the specified shell.\n"
        "See each sub-command's help for details on how to use the generated script.",
    )
    completion.add(*(_command_for(shell) for shell in SCRIPTS))
    return [completion]
