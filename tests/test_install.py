"""Packaging: ranges in setup.py, exact versions in constraints.txt that satisfy them, and an
install that keeps a runtime's own (newer) jax, checked with pip's dry-run resolver."""

import json
import os
import re
import runpy
import subprocess
import sys

import pytest
import setuptools
from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
colab_install = runpy.run_path(os.path.join(ROOT, "colab", "install.py"))


@pytest.fixture(scope="module")
def setup_kwargs():
    captured = {}
    real = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        runpy.run_path(os.path.join(ROOT, "setup.py"))
    finally:
        setuptools.setup = real
    return captured


def _constraints():
    pins = {}
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                name, version = line.split("==")
                pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_requirements_are_ranges_and_extras_are_complete(setup_kwargs):
    reqs = [Requirement(r) for r in setup_kwargs["install_requires"]]
    assert not [str(r) for r in reqs if any(s.operator == "==" for s in r.specifier)], "pins"
    floor = colab_install["jax_floor"](ROOT)
    assert {str(r) for r in reqs} >= {f"jax>={floor}", f"jaxlib>={floor}"}
    extras = setup_kwargs["extras_require"]
    assert {"cuda12", "tpu", "hf", "eval", "trackers", "gcs", "test"} <= set(extras)
    assert extras["cuda12"] == [f"jax[cuda12]>={floor}"] and extras["tpu"] == [f"jax[tpu]>={floor}"]
    test = {Requirement(r).name for r in extras["test"]}
    for extra in ("hf", "eval", "trackers", "gcs"):  # CI tests every optional piece for real
        assert {Requirement(r).name for r in extras[extra]} <= test, extra


def test_constraints_pin_every_requirement_inside_its_range(setup_kwargs):
    pins = _constraints()
    reqs = setup_kwargs["install_requires"] + setup_kwargs["extras_require"]["test"]
    for req in map(Requirement, reqs):
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"constraints.txt has no version for {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside setup.py's {req}")
    assert pins["torch"] == "2.13.0"  # the local CPU wheel .ci/run installs first


def _dry_run(tmp_path, project, *pip_args):
    """What `pip install` of project would install here, beside this environment's packages (the
    runtime's jax): the names from pip's --dry-run --report, which changes nothing installed."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "-q", *_build_flags(),
           "--report", str(report), project, *pip_args]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}


def _build_flags():
    """No build isolation (setup.py's metadata from the installed setuptools, no download) when
    that setuptools can make wheel metadata on its own: from 70.1, or with the `wheel` package.
    A fresh venv's older setuptools cannot ("invalid command 'bdist_wheel'"): then pip's isolated
    build, which fetches setuptools from the package index."""
    from importlib.util import find_spec

    own = tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2]) >= (70, 1)
    return ["--no-build-isolation"] if own or find_spec("wheel") else []


def test_pip_keeps_a_runtimes_newer_jax(tmp_path):
    import jax

    project = tmp_path / "project"
    project.mkdir()
    setup_py = open(os.path.join(ROOT, "setup.py")).read()
    older = "0.4.30"  # a floor below the installed jax: the runtime's jax is the newer one
    assert colab_install["version_tuple"](jax.__version__) > colab_install["version_tuple"](older)
    (project / "setup.py").write_text(re.sub(r'^JAX = "[^"]+"', f'JAX = "{older}"', setup_py,
                                             flags=re.M))
    installs = _dry_run(tmp_path, str(project))
    assert "lm" in installs
    assert not installs & {"jax", "jaxlib"}, f"pip would replace the runtime's jax: {installs}"


def test_colab_install_pins_the_runtime_jax_and_pip_keeps_it(tmp_path, monkeypatch):
    import jax

    args, pins = colab_install["plan"](ROOT, editable=False)
    assert args == [ROOT] and f"jax=={jax.__version__}" in pins
    assert any(p.startswith("jaxlib==") for p in pins)
    (tmp_path / "keep.txt").write_text("\n".join(pins) + "\n")
    installs = _dry_run(tmp_path, ROOT, "-c", str(tmp_path / "keep.txt"))
    assert not installs & {"jax", "jaxlib"}, installs
    # A runtime whose jax is older than lm's floor gets the extra for its hardware instead.
    monkeypatch.setitem(colab_install["plan"].__globals__, "jax_floor", lambda root: "99.0")
    monkeypatch.setitem(colab_install["plan"].__globals__, "accelerator", lambda: "cuda12")
    assert colab_install["plan"](ROOT, editable=True) == (["-e", f"{ROOT}[cuda12]"], [])
