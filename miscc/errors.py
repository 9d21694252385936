"""Errors a user can fix, and the one place where entry points turn them into `error: <message>`.

Code that detects bad input (a config value, a data file, a checkpoint, an argument, an output path) raises a
`UserError`: `InputError` (also a ValueError), `MissingFileError` (a FileNotFoundError), `CheckpointError` (a
RuntimeError) or one of the project's own subclasses (ConfigError, DatasetLayoutError, UnsafePickleError, ...).
Every entry point runs its `main` through `run_cli`, which prints such an error, and the operating system's file
errors (missing, not a directory, permission), as `error: <message>` on stderr and exits with status 2, without a
traceback. Anything else is a bug and keeps its traceback; `--debug` or `T2I_DEBUG=1` shows the traceback of every
error.
"""
from __future__ import annotations

import os
import re
import sys

DEBUG_ENV = "T2I_DEBUG"
EXIT_USER_ERROR = 2  # argparse's status for a usage error


class UserError(Exception):
    """An error in what the user gave (config, files, arguments), not in the code."""


class InputError(UserError, ValueError):
    """A value in a config, data file or argument that is not what is expected."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the run needs does not exist."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be loaded as data, or whose tensors do not fit the model the config builds."""


class MissingKeyError(UserError, KeyError):
    """A data file lacks an entry it must have."""

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0]) if self.args else ""


class UnreadableFileError(UserError, OSError):
    """A file that exists but cannot be decoded (an image, a text file)."""


class OutputPathError(UserError, OSError):
    """An output path that cannot be used (e.g. an existing regular file where a folder is needed)."""


# The operating system's refusals: the message names the file (errno text and path), nothing to debug in the code.
_OS_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError)


def is_user_error(e: BaseException) -> bool:
    """True for the errors `run_cli` reports as one line."""
    return isinstance(e, UserError) or (isinstance(e, _OS_ERRORS) and getattr(e, "filename", None) is not None)


def ensure_output_dir(path: str, what: str = "output folder") -> str:
    """Create folder `path` (and its parents); an existing file in the way is an `OutputPathError` naming it."""
    probe = os.path.abspath(path)
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        where = "" if probe == os.path.abspath(path) else f" (inside {path})"
        raise OutputPathError(f"{what} {path} cannot be created: {probe} is an existing file{where}, not a folder; "
                              "give a folder path")
    os.makedirs(path, exist_ok=True)
    return path


def debug_enabled(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def add_debug_argument(parser) -> None:
    """Document `--debug` in a parser's help (`run_cli` reads and removes it before the parser runs)."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show the Python traceback of an error (also: {DEBUG_ENV}=1)")


def format_error(e: BaseException) -> str:
    """The stderr text for `e`: any detail lines of a multi-line message first, `error: <first line>` last."""
    text = str(e) or type(e).__name__
    if "\nOriginal Traceback (most recent call last):\n" in text:  # re-raised from a DataLoader worker
        lines = text.split("\n")
        starts = [i for i, line in enumerate(lines) if re.match(rf"([\w.]+\.)?{type(e).__name__}: ", line)]
        if starts:
            text = "\n".join(lines[starts[-1]:]).split(": ", 1)[1]
    head, *details = text.strip().split("\n")
    return "\n".join(details + [f"error: {head}"])


def run_cli(main, argv: list[str] | None = None) -> int:
    """Run `main(argv)` as a command: a `UserError` (or a file error of the OS) becomes `error: <message>` on stderr
    and exit status 2; `--debug` (removed from argv) or T2I_DEBUG=1 lets every exception through with its
    traceback. Returns the exit status for `sys.exit`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"  # DataLoader workers and subprocesses see it too
    try:
        status = main(argv)
    except Exception as e:
        if debug or not is_user_error(e):
            raise
        sys.stdout.flush()
        print(format_error(e), file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return status if isinstance(status, int) else 0
