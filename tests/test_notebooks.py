"""The Colab notebooks run top to bottom (headless, CPU) and are committed without outputs.

Each notebook is executed by nbclient in a fresh ipykernel running this interpreter, with the
colab/ folder as its working directory, LM_NOTEBOOK_FAST=1 (smaller runs) and a temporary
LM_NOTEBOOK_WORKDIR, so nothing is written into the repository. A cell that raises fails the
test. One CPU device, as on a Colab CPU runtime (conftest's 8 simulated devices are for the
sharding tests).
"""

import json
import os
import runpy
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "colab")
NOTEBOOKS = ("quickstart.ipynb", "attention_as_kernel_smoothing.ipynb", "not_yet.ipynb",
             "pretrained_not_yet.ipynb")
KERNEL = "lm-notebook-tests"

# What each notebook must show besides running: (image count or text, minimum count).
EXPECT = {
    "quickstart.ipynb": [("image/png", 1), ("bits/byte", 1), ("def ", 1), ("mesh {", 1)],
    "attention_as_kernel_smoothing.ipynb": [("image/png", 3), ("matches", 2)],
    "not_yet.ipynb": [("image/png", 2), ("verdict", 1), ("predicted before the run", 1)],
    "pretrained_not_yet.ipynb": [("image/png", 2), ("not_yet", 2), ("predicted before the run: answer NLL", 1),
                                 ("lm archive rerun", 1)],
}

strip = runpy.run_path(os.path.join(COLAB, "strip_outputs.py"))["strip"]  # writes no .pyc


def _read(name):
    return nbformat.read(os.path.join(COLAB, name), as_version=4)


def _files(path, suffix=""):
    """{relative path: (size, mtime)} of the files below path: to prove nothing was written."""
    out = {}
    for d, _, files in os.walk(path):
        for f in files:
            if f.endswith(suffix) and "__pycache__" not in d:
                st = os.stat(os.path.join(d, f))
                out[os.path.relpath(os.path.join(d, f), path)] = (st.st_size, st.st_mtime_ns)
    return out


def test_every_notebook_is_listed():
    found = {f for f in os.listdir(COLAB) if f.endswith(".ipynb")}
    assert found == set(NOTEBOOKS), f"notebooks in colab/ {sorted(found)} vs tested {NOTEBOOKS}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    for i, cell in enumerate(code):
        assert cell.outputs == [] and cell.execution_count is None, (
            f"{name}: code cell {i} has outputs; run `python colab/strip_outputs.py colab/*.ipynb`")
    assert "google.colab" in code[0].source and "pip" in code[0].source, (
        f"{name}: the first code cell must install the package")


def test_strip_outputs_clears_an_executed_notebook(tmp_path):
    nb = _read("quickstart.ipynb")
    cell = next(c for c in nb.cells if c.cell_type == "code")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    cell.execution_count = 3
    nb.metadata["widgets"] = {"state": {}}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, str(path))
    assert strip(str(path)) is True
    again = nbformat.read(str(path), as_version=4)
    assert all(c.outputs == [] and c.execution_count is None
               for c in again.cells if c.cell_type == "code")
    assert "widgets" not in again.metadata
    assert strip(str(path)) is False  # already clean: the file is left alone


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec for this very interpreter, in a private JUPYTER_PATH."""
    jupyter = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "lm notebook tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return str(jupyter)


def _outputs_text(nb):
    """Everything the notebook showed, as one string, plus the count of each mime type."""
    parts, mimes = [], {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            for mime, data in out.get("data", {}).items():
                mimes[mime] = mimes.get(mime, 0) + 1
                if mime == "text/plain" or mime == "text/markdown":
                    parts.append(data)
    return "".join(parts), mimes


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, kernel_env, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", kernel_env)
    monkeypatch.setenv("LM_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("LM_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # one CPU device, like a Colab CPU runtime
    monkeypatch.delenv("LM_REPO_ROOT", raising=False)  # the notebook finds the checkout itself
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    archive = os.path.join(ROOT, "experiments", "archive")
    colab_before, records_before = _files(COLAB), _files(archive, ".json")

    nb = _read(name)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=600,
                            resources={"metadata": {"path": COLAB}})
    start = time.time()
    client.execute()  # raises CellExecutionError on the first failing cell
    print(f"{name}: {time.time() - start:.1f}s")
    nbformat.write(nb, str(tmp_path / name))  # the executed notebook, to look at on failure

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{name}: not every cell ran"
    text, mimes = _outputs_text(nb)
    assert "backend cpu, devices [" in text, f"{name}: the install cell must print jax's devices"
    for what, count in EXPECT[name]:
        seen = mimes.get(what, 0) if what.startswith("image/") else text.count(what)
        assert seen >= count, f"{name}: expected {what!r} at least {count}x in the outputs, saw {seen}"
    assert _files(COLAB) == colab_before, f"{name} wrote into colab/"
    records_after = _files(archive, ".json")
    for f, stat in records_before.items():  # records are never edited
        assert records_after.get(f) == stat, f"{name} changed experiments/archive/{f}"
    for f in set(records_after) - set(records_before):  # teammates may add records meanwhile
        with open(os.path.join(archive, f), errors="replace") as fh:
            assert str(tmp_path) not in fh.read(), f"{name} wrote experiments/archive/{f}"
    if name == "not_yet.ipynb":
        assert f"a copy of the archive: {tmp_path}" in text, "not_yet.ipynb must work on a temp copy"


def test_pretrained_notebook_offline_stops_at_once(kernel_env, tmp_path, monkeypatch):
    """Without the fast mode the ladder comes from the hub: offline and not cached, the import
    cell stops at once with the one line that says what to do instead (no run is attempted)."""
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("JUPYTER_PATH", kernel_env)
    monkeypatch.delenv("LM_NOTEBOOK_FAST", raising=False)
    monkeypatch.setenv("LM_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    nb = _read("pretrained_not_yet.ipynb")
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=120, resources={"metadata": {"path": COLAB}})
    start = time.time()
    with pytest.raises(CellExecutionError) as err:
        client.execute()
    assert time.time() - start < 60, "offline, the hub path must fail at once"
    message = str(err.value)
    assert "hf:EleutherAI/pythia-14m" in message and "huggingface-cli download" in message, message
    assert "init_from=DIR" in message and "LADDER" in message, message
    assert not list((tmp_path / "work").rglob("*.json")), "no record may be written offline"
