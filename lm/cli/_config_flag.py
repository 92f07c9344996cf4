"""`--config=experiments/FILE.py[:RUNG]` (ml_collections config_flags) with one-line errors.

config_flags loads the file while absl parses the command line, and reports what goes wrong
there as tracebacks (a get_config that raises, an unknown --config.KEY) or defers it (a
missing file). `one_line_errors` wraps the flag's parser so each of these is one line
`lm COMMAND: error: ...`; `load` returns the config with the rung of `FILE.py:RUNG` applied.
"""

from __future__ import annotations

import os
import re
import sys

from absl import flags
from ml_collections import config_flags


def _fail(command: str, message: str):
    sys.exit(f"lm {command}: error: {message}")


def _last_line(text: str) -> str:
    """The exception line at the end of a traceback that config_flags put into a message."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else text
    return re.sub(r"^[\w.]+(Error|Exception): ", "", last)


def _unknown_key(command: str, name: str, e: Exception):
    """An unknown --config.KEY (config_flags raises AttributeError or KeyError)."""
    text = str(e).replace("\\", "")
    key = re.search(r"'([^'\"]+)", text)
    key = key.group(1) if key else text
    hint = re.search(r'Did you mean "([^"]+)"', text)
    given = [a[2:].split("=")[0] for a in sys.argv if a.startswith(f"--{name}.")]
    path_key = next((g for g in given if key in g.split(".")), key)
    _fail(command, f"unknown config key {path_key!r}"
          + (f" (did you mean {hint.group(1)!r}?)" if hint else ""))


def one_line_errors(holder, command: str):
    """Wrap a config_flags.DEFINE_config_file flag's parser (see the module docstring)."""
    name = holder.name
    config_flag = flags.FLAGS[name]
    parse_config = config_flag._parse

    def parse_field(flag, value):
        try:
            type(flag).parse(flag, value)
        except flags.Error as e:
            reason = str(e).partition(f"={value}: ")[2] or str(e)
            _fail(command, f"--{flag.name}={value}: {reason}")

    def parse(argument):
        path = argument.partition(":")[0]
        if not os.path.isfile(path):
            _fail(command, f"--{name}={argument}: no such config file {path!r}")
        # config_flags loads the file as module NAME_config with load_module, which executes it
        # into an existing module of that name: a file without get_config would inherit the
        # one of a file loaded before in this process (tests, notebooks).
        sys.modules.pop(f"{name}_config", None)
        try:
            config = parse_config(argument)
        except AttributeError as e:
            if "has no attribute 'get_config'" in str(e):  # config_flags names the module oddly
                _fail(command, f"--{name}={argument}: {path} defines no get_config(arg) "
                      "(a config file must define one returning a ConfigDict)")
            _unknown_key(command, name, e)
        except KeyError as e:  # an unknown --config.KEY
            _unknown_key(command, name, e)
        except (TypeError, ValueError) as e:  # get_config raised; config_flags adds a traceback
            _fail(command, f"--{name}={argument}: {_last_line(str(e))}")
        except SyntaxError as e:
            _fail(command, f"--{name}={argument}: {e.filename}, line {e.lineno}: syntax error: {e.msg}")
        except flags.Error as e:  # absl's wrapper of a ValueError from get_config
            _fail(command, f"--{name}={argument}: {_last_line(str(e))}")
        except Exception as e:  # whatever get_config raised (the file is the user's code)
            _fail(command, f"--{name}={argument}: get_config raised {type(e).__name__}: {e}")
        error = getattr(config, "_error", None)  # config_flags defers a file that failed to load
        if error is not None:
            _fail(command, f"--{name}={argument}: cannot load it: {_last_line(str(error))}")
        for flag_name in list(flags.FLAGS):
            if flag_name.startswith(name + "."):
                field = flags.FLAGS[flag_name]
                field.parse = lambda value, f=field: parse_field(f, value)
        return config

    config_flag._parse = parse
    return holder


def load(holder, name: str = "config"):
    """(config, 'file[:arg]') from a wrapped flag, with the rung of `file:rung` applied.

    If the arg names a rung of config.experiment.ladder that the file did not apply itself,
    its overrides are applied here, and command-line --config.* overrides again on top.
    """
    flag = flags.FLAGS[name]
    if not flag.present:
        raise ValueError(f"--{name}=experiments/FILE.py[:RUNG] is required")
    from lm.experiment import apply_flag_rung

    config = holder.value
    arg = flag.config_filename
    apply_flag_rung(config, arg, config_flags.get_override_values(flag))
    return config, arg
