"""Install lm into a notebook runtime without replacing the runtime's own jax.

A Colab GPU/TPU runtime ships a jax built for its accelerator. If that jax is at least lm's
floor (JAX in setup.py), it is kept: pip gets a constraints file pinning jax, jaxlib and any
installed accelerator plugin at their current versions, so no other requirement can swap them
for a CPU build. If jax is missing or older, lm is installed with the extra that matches the
hardware (cuda12 when nvidia-smi exists, tpu on a TPU runtime), else the CPU build.

The notebooks' first cell calls `install(REPO_ROOT, editable)` via runpy (no .pyc written), and
`python colab/install.py [--dry-run]` does the same from a shell.
"""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# The distributions that make up a runtime's jax; kept together at their installed versions.
JAX_DISTS = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
             "jax-cuda13-pjrt", "libtpu")


def jax_floor(repo_root: str) -> str:
    """The jax lower bound in setup.py (`JAX = "x.y.z"`)."""
    with open(os.path.join(repo_root, "setup.py")) as f:
        found = re.search(r'^JAX = "([^"]+)"', f.read(), re.M)
    if not found:
        raise RuntimeError(f"no `JAX = \"...\"` line in {repo_root}/setup.py")
    return found.group(1)


def version_tuple(version: str) -> tuple:
    """(0, 10, 2) for '0.10.2' (and for '0.10.2.dev20261101+cuda12')."""
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def installed(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def accelerator() -> str:
    """The lm extra for this machine's accelerator: 'cuda12', 'tpu' or '' (CPU)."""
    if shutil.which("nvidia-smi"):
        return "cuda12"
    if os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME") or os.path.exists("/dev/accel0"):
        return "tpu"
    return ""


def plan(repo_root: str, editable: bool) -> tuple[list, list]:
    """(pip arguments after `pip install`, pins 'name==version' for the constraints file)."""
    runtime_jax = installed("jax")
    keep = runtime_jax is not None and version_tuple(runtime_jax) >= version_tuple(jax_floor(repo_root))
    pins = [f"{d}=={installed(d)}" for d in JAX_DISTS if installed(d)] if keep else []
    extra = "" if keep else accelerator()
    target = repo_root + (f"[{extra}]" if extra else "")
    return (["-e"] if editable else []) + [target], pins


def install(repo_root: str, editable: bool = False, dry_run: bool = False) -> list:
    """pip-install lm as planned; returns the pip command it ran."""
    args, pins = plan(repo_root, editable)
    cmd = [sys.executable, "-m", "pip", "install", "-q", *args]
    with tempfile.TemporaryDirectory() as tmp:
        if pins:
            path = os.path.join(tmp, "keep-runtime-jax.txt")
            with open(path, "w") as f:
                f.write("\n".join(pins) + "\n")
            cmd += ["-c", path]
            print(f"keeping the runtime's {', '.join(pins)}")
        if dry_run:
            cmd += ["--dry-run"]
        subprocess.run(cmd, check=True)
    return cmd


def describe() -> str:
    """One line: jax's version, backend and devices. Called before the notebook's first JAX
    operation, it first sets the CPU device count (one, unless LM_CPU_DEVICES=N asks for more)."""
    import jax

    from lm import devices

    devices.configure_cpu_devices()

    return f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}"


if __name__ == "__main__":
    install(os.path.dirname(HERE), editable=True, dry_run="--dry-run" in sys.argv)
