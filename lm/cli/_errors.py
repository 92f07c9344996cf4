"""Shared wrapper for the eval / sample / baselines commands (it defines no flags, so every
command module can import it)."""

import functools
import sys



def one_line_errors(command: str):
    """Decorator for a command's main(argv).

    Bad input (ValueError, incl. ConfigError, or a missing file) ends the program with one line
    `lm COMMAND: error: ...` on stderr and exit status 1, not a traceback; stray positional
    arguments are bad input too.
    """
    def wrap(main):
        @functools.wraps(main)
        def run(argv):
            try:
                if len(argv) > 1:
                    raise ValueError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
                return main(argv)
            except (ValueError, FileNotFoundError) as e:
                sys.exit(f"lm {command}: error: {e}")
        return run
    return wrap
