"""`lm COMMAND --help`: the command's usage and its own flags, nothing from other libraries.

absl's --help only describes the main script's flags (ours define theirs in lm/cli/COMMAND.py,
so it prints "Try --helpfull"), and --helpfull adds every imported library's flags. Here the
listing is the flags defined by lm's own modules that the command imported: its module first,
then shared ones (e.g. a flag that lm/cli/_errors.py defines for every command).
"""

import os
import sys

HELP_ARGS = ("-h", "--help", "-help", "-?")


def wants_help(args) -> bool:
    """True if a help flag comes before any `--` that ends the flags."""
    for arg in args:
        if arg == "--":
            return False
        if arg in HELP_ARGS:
            return True
    return False


def lm_flag_modules(module) -> list:
    """Names of lm modules that defined flags, the command's own module first."""
    from absl import flags

    names = [n for n in flags.FLAGS.flags_by_module_dict() if n == "lm" or n.startswith("lm.")]
    return sorted(names, key=lambda n: (n != module.__name__, n))


def command_help(command: str, module) -> str:
    """The module docstring (its usage) followed by the flags lm's modules define."""
    from absl import flags

    doc = (module.__doc__ or f"lm {command}").strip()
    flag_lines = []
    for name in lm_flag_modules(module):
        # module_help starts with a blank line and "MODULE:"; keep only the flag lines.
        flag_lines += [line for line in flags.FLAGS.module_help(name).splitlines()
                       if line.startswith("  ")]
    lines = [doc, "", f"flags of `lm {command}`:"]
    lines += flag_lines or ["  (none)"]
    lines += ["", "`lm COMMAND --helpfull` also lists absl's logging flags (--verbosity, ...)."]
    return "\n".join(lines)


def print_help_and_exit(command: str, module) -> None:
    try:
        print(command_help(command, module), flush=True)
    except BrokenPipeError:  # `lm train --help | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
