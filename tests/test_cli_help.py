"""`lm COMMAND --help`: the command's usage and every flag its module defines, with help text,
and nothing from absl, JAX or other libraries."""

import os
import re
import subprocess
import sys

import pytest

from lm.cli import COMMANDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Flags other libraries define: absl's logging and help flags, JAX/XLA's if they leaked in.
FOREIGN = ("--verbosity", "--logtostderr", "--alsologtostderr", "--log_dir", "--helpfull",
           "--helpshort", "--flagfile", "--undefok", "--jax_", "--xla_", "--only_check_args")
# Flags lm/cli defines for every command may join a command's own (--debug: lm/cli/_errors.py;
# the multi-process start: lm/cli/_multihost.py).
SHARED = {"debug", "coordinator_address", "num_processes", "process_id"}


def _defined_flags(command):
    """Flag names lm/cli/COMMAND.py defines (flags.DEFINE_* and config_flags.DEFINE_config_*)."""
    with open(os.path.join(ROOT, "lm", "cli", f"{command}.py")) as f:
        return re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", f.read())


@pytest.fixture(scope="module")
def helps():
    """Run `lm COMMAND --help` for every command at once (each is its own process)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))
    procs = {c: subprocess.Popen([sys.executable, "-m", "lm", c, "--help"], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in COMMANDS}
    return {c: (p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for c, p in procs.items()}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_the_commands_own_flags(helps, command):
    rc, out, err = helps[command]
    assert rc == 0, f"lm {command} --help exited {rc}: {err[-2000:]}"
    assert f"lm {command}" in out.splitlines()[0], out[:300]
    flag_lines = [line for line in out.splitlines() if line.startswith("  --")]
    shown = {re.match(r"  --(?:\[no\])?(\w+)", line).group(1) for line in flag_lines}
    defined = set(_defined_flags(command))
    assert defined, f"no flags found in lm/cli/{command}.py"
    assert defined <= shown, f"lm {command} --help misses {sorted(defined - shown)}"
    for line in flag_lines:  # each flag comes with its help text
        assert re.match(r"  --(?:\[no\])?\w+: \S", line), f"flag without help text: {line!r}"
    foreign = [line for line in flag_lines if line.lstrip().startswith(FOREIGN)]
    assert not foreign, f"lm {command} --help lists other libraries' flags: {foreign}"
    assert shown <= defined | SHARED, f"lm {command} --help lists {sorted(shown - defined)}"
    assert "Try --helpfull" not in out


def test_train_help_names_config_and_workdir(helps):
    out = helps["train"][1]
    assert "  --config: " in out and "  --workdir: " in out


def test_help_after_other_flags_and_top_level_usage():
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-m", "lm", "sample", "--workdir=/nonexistent", "-h"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "  --prompt: Text to continue." in run.stdout, run.stderr
    top = subprocess.run([sys.executable, "-m", "lm", "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert top.returncode == 0 and all(f"  {c} " in top.stdout for c in COMMANDS)
    assert "`lm COMMAND --help`" in top.stdout
