"""`lm COMMAND [flags]`: one absl program per command.

Each command lives in its own module under lm/cli/ and defines its absl flags at import,
so only the chosen command's flags exist when the command line is parsed.
"""

import sys

COMMANDS = {
    "train": "Train a model from a config file; rerunning resumes from the last checkpoint.",
    "eval": "Evaluate a trained workdir: loss, bits per byte, perplexity.",
    "sample": "Generate text from a trained workdir with the KV cache.",
    "baselines": "n-gram and compressor baselines in bits per byte on an experiment's data.",
    "run": "Run one rung of an experiment file and write a record into the archive.",
    "archive": "List, show, rerun and report archived experiment records.",
    "import": "Make a workdir from a Hugging Face model (hf:ORG/NAME or a local directory).",
    "export": "Write a workdir as a Hugging Face model directory (config, safetensors, tokenizer).",
}


def usage() -> str:
    lines = ["usage: lm COMMAND [--flags]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += ["", "`lm COMMAND --help` lists a command's flags; `--debug` shows a traceback",
              "instead of the one-line error."]
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
    from lm import devices

    try:  # before JAX starts: one CPU device unless LM_CPU_DEVICES asks for more
        devices.configure_cpu_devices()
    except ValueError as e:
        print(f"lm {command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    from absl import app, flags, logging

    from lm.cli import _errors

    _errors.DEBUG = "--debug" in argv  # any command: a traceback instead of the one-line error
    argv = [a for a in argv if a != "--debug"]
    module = _errors.fresh_command_module(command)
    from lm.cli import _help, _multihost

    _multihost.define()  # --coordinator_address etc.: flags every command shares

    if _help.wants_help(argv[2:]):
        _help.print_help_and_exit(command, module)

    def quiet_main(args):
        # Libraries log at INFO (Orbax: every save and restore); --verbosity brings it back.
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        try:  # every command: one job of N processes under SLURM / a TPU pod, not N jobs
            _multihost.start()
        except (ValueError, RuntimeError) as e:
            sys.exit(f"lm {command}: error: multi-process start: {str(e).splitlines()[0]}")
        return module.main(args)

    _errors.call(command, lambda a: app.run(quiet_main, argv=a), [f"lm {command}"] + argv[2:],
                 sys_argv=argv)
