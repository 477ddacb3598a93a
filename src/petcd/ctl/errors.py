"""Errors and exit codes of ``petcdctl``.

Theory of operation: a command never calls ``sys.exit`` itself; it raises
:class:`ExitError` with etcdctl's exit code and message, and
:func:`petcd.ctl.main.main` prints ``Error: <message>`` on stderr and exits with
that code, exactly as etcdctl's ``ExitWithError`` does. :class:`FlagError` is a
command-line parse error; etcdctl (cobra) answers those with the message, the
command's usage and the message again, and exit code 1.
"""

from __future__ import annotations

# etcdctl's exit codes (pkg/cobrautl): the values are part of its interface.
EXIT_SUCCESS = 0
EXIT_ERROR = 1
EXIT_BAD_CONNECTION = 2
EXIT_INVALID_INPUT = 3  # txn and watch input
EXIT_BAD_FEATURE = 4  # a valid flag with an unsupported value
EXIT_INTERRUPTED = 5
EXIT_IO = 6
EXIT_BAD_ARGS = 128


class ExitError(Exception):
    """Stop the command: print ``Error: <message>`` and exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FlagError(Exception):
    """The command line could not be parsed (unknown flag, bad flag value...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SilentExit(Exception):
    """Exit with ``code`` without printing anything more."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
