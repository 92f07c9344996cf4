"""One error discipline for every command (the dispatcher wraps each command's main).

Expected failures (bad input, a missing or unreadable file, a stopped run: see `EXPECTED`) end
the program with one line `lm COMMAND: error: ...` on stderr and a non-zero exit status, not a
traceback; `--debug` (anywhere on the command line) or LM_DEBUG=1 shows the traceback. Warnings
print as one line `lm COMMAND: warning: ...`. Anything else is a bug and keeps its traceback.
It defines no flags, so any module can import it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
import warnings

from lm.errors import LmError

EXPECTED = (ValueError, OSError, EOFError, SyntaxError, ImportError, LmError)

_OS_PROBLEMS = {
    errno.ENOENT: "no such file or directory",
    errno.EACCES: "permission denied (choose a writable location or fix its permissions)",
    errno.EPERM: "operation not permitted (choose a writable location or fix its permissions)",
    errno.EROFS: "read-only file system (choose a writable location)",
    errno.ENOSPC: "no space left on device (free some space or choose another disk)",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "is a directory, not a file",
    errno.EEXIST: "a file is in the way (a directory is needed there)",
}


DEBUG = False  # set by the dispatcher from --debug


def debug() -> bool:
    return DEBUG or os.environ.get("LM_DEBUG", "").lower() in ("1", "true", "yes", "on")


def describe(e: BaseException) -> str:
    """The one line a user sees for an expected failure."""
    if isinstance(e, OSError) and e.errno in _OS_PROBLEMS and e.filename:
        where = e.filename + (f" -> {e.filename2}" if e.filename2 else "")
        text = f"{where}: {_OS_PROBLEMS[e.errno]}"
    elif isinstance(e, SyntaxError) and e.filename:
        text = f"{e.filename}, line {e.lineno}: syntax error: {e.msg}"
    elif isinstance(e, ModuleNotFoundError) and e.name:
        text = f"the package {e.name!r} is not installed (pip install it)"
    else:
        text = str(e) or type(e).__name__
        if isinstance(e, EOFError):
            text = f"unexpected end of file (a truncated file?): {text}"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines) if len(lines) <= 3 else " ".join(lines[:3]) + " ..."


@contextlib.contextmanager
def one_line_warnings(command: str):
    """warnings.warn(...) as `lm COMMAND: warning: ...` lines (not two lines with a source line)."""
    old = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
            return  # for developers of lm's dependencies, not for its users
        if issubclass(category, RuntimeWarning) and "was never awaited" in str(message):
            return  # a dependency's async writer torn down by an error already reported in one line
        print(f"lm {command}: warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = old


def call(command: str, main, argv, sys_argv=None):
    """main(argv) under the error discipline; returns its exit status. sys_argv: what sys.argv
    is meanwhile (config_flags reads --config.KEY overrides from it, not from argv)."""
    saved = sys.argv
    try:
        if sys_argv is not None:
            sys.argv = list(sys_argv)
        with one_line_warnings(command):
            return main(argv)
    except KeyboardInterrupt:
        if debug():
            raise
        sys.exit(f"lm {command}: interrupted")  # exits 1, like any error
    except EXPECTED as e:
        if debug():
            raise
        print(f"lm {command}: error: {describe(e)}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 1))
    finally:
        sys.argv = saved


def one_line_errors(command: str):
    """Decorator for a command's main(argv): stray positional arguments are bad input, and
    expected failures are one line (see `call`)."""
    def wrap(main):
        @functools.wraps(main)
        def run(argv):
            def checked(argv):
                if len(argv) > 1:
                    raise ValueError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
                return main(argv)
            return call(command, checked, argv)
        return run
    return wrap


def fresh_command_module(command: str):
    """Import lm.cli.COMMAND with fresh flags, so several commands can run in one process (tests,
    notebooks): absl flags are global, and two commands define --config."""
    import importlib

    from absl import flags

    name = f"lm.cli.{command}"
    owned = flags.FLAGS.flags_by_module_dict()
    for module, defined in list(owned.items()):
        if module.startswith("lm.cli."):
            for flag in list(defined):  # deleting edits these lists
                if flag.name in flags.FLAGS:
                    delattr(flags.FLAGS, flag.name)
    for flag_name in [n for n in flags.FLAGS if "." in n]:  # config_flags' --config.a.b overrides
        delattr(flags.FLAGS, flag_name)
    sys.modules.pop(name, None)
    return importlib.import_module(name)
