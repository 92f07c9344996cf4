"""`lm COMMAND [flags]`: one absl program per command.

Each command lives in its own module under lm/cli/ and defines its absl flags at import,
so only the chosen command's flags exist when the command line is parsed.
"""

import importlib
import sys

COMMANDS = {
    "train": "Train a model from a config file; rerunning resumes from the last checkpoint.",
    "eval": "Evaluate a trained workdir: loss, bits per byte, perplexity.",
    "sample": "Generate text from a trained workdir with the KV cache.",
    "baselines": "n-gram and compressor baselines in bits per byte on an experiment's data.",
    "run": "Run one rung of an experiment file and write a record into the archive.",
    "archive": "List, show, rerun and report archived experiment records.",
}


def usage() -> str:
    lines = ["usage: lm COMMAND [--flags]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += ["", "`lm COMMAND --help` lists a command's flags."]
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    command = argv[1]
    if command not in COMMANDS:
        print(f"lm: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(f"lm.cli.{command}")
    from lm.cli import _help

    if _help.wants_help(argv[2:]):
        _help.print_help_and_exit(command, module)
    from absl import app, flags, logging

    def quiet_main(args):
        # Libraries log at INFO (Orbax: every save and restore); --verbosity brings it back.
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        return module.main(args)

    app.run(quiet_main, argv=[f"lm {command}"] + argv[2:])
