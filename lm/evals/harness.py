"""lm-evaluation-harness adapter: lm models as the harness's model "lm".

    pip install -e '.[eval]'       # lm-eval (after `pip install torch==2.13.0`, the CPU build)
    lm eval --workdir=DIR --harness_tasks=lm_tiny_arith --include_path=tests/fixtures/harness
    python -m lm.evals.harness --model lm --model_args workdir=DIR --tasks lm_tiny_arith \\
        --include_path tests/fixtures/harness            # the harness's own CLI, "lm" registered

The harness finds models by name in a registry filled at import; its `lm_eval` command does
not import plugins, so `python -m lm.evals.harness` is that command with this module imported
(any `lm_eval` flag works). In Python: `register()` then `lm_eval.simple_evaluate(model="lm", ...)`.

The three request types go straight to lm.evals.api.Evaluator, with the harness's context
rule (strict=False): prompts longer than the context are cut from the left. Runs offline on a
task defined by a local YAML and local data files (datasets' "json" builder).

lm_eval is imported lazily: nothing else in lm needs it.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import sys

NAME = "lm"
HFLM_MAX_GEN_TOKS = 256  # lm-eval's hf model's default max_gen_toks
_GEN_KEYS = ("until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p", "seed")


def _lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ValueError("lm-evaluation-harness is not installed: pip install 'lm[eval]' "
                         "(or pip install lm-eval, after pip install torch==2.13.0)") from None
    return lm_eval


@functools.lru_cache(maxsize=None)
def model_class():
    """The harness LM subclass (built on first use, so importing this module needs no lm_eval)."""
    _lm_eval()
    from lm_eval.api.model import LM

    class LMHarness(LM):
        """model_args: workdir=DIR[,checkpoint=STEP][,batch_size=N]; or evaluator=Evaluator."""

        def __init__(self, workdir=None, checkpoint=None, batch_size=None, evaluator=None,
                     max_batch_size=None, device=None, **unknown):
            super().__init__()
            if unknown:
                raise ValueError(f"model 'lm': unknown model_args {sorted(unknown)}; "
                                 "known: workdir, checkpoint, batch_size")
            if evaluator is None:
                if not workdir:
                    raise ValueError("model 'lm' needs model_args workdir=DIR (an `lm train` workdir)")
                from lm.evals.api import Evaluator

                size = int(batch_size) if str(batch_size or "").isdigit() else None
                evaluator = Evaluator.from_workdir(
                    str(workdir), step=int(checkpoint) if checkpoint not in (None, "") else None,
                    batch_size=size)
            self.ev = evaluator

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return self.ev.loglikelihood([tuple(r.args) for r in requests], strict=False)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return self.ev.loglikelihood_rolling([r.args[0] for r in requests])

        def generate_until(self, requests, disable_tqdm: bool = False):
            from lm_eval.models.utils import normalize_gen_kwargs

            reqs = []
            for r in requests:  # HFLM's reading of the settings (max_gen_toks aliases, default 256)
                context, kwargs = r.args
                kwargs = normalize_gen_kwargs(dict(kwargs or {}), HFLM_MAX_GEN_TOKS)
                reqs.append((context, {k: v for k, v in kwargs.items() if k in _GEN_KEYS}))
            return self.ev.generate_until(reqs, strict=False)

        @property
        def tokenizer_name(self) -> str:
            return getattr(self.ev.tokenizer, "name", "lm")

    return LMHarness


def register() -> type:
    """Register the model "lm" in the harness's registry (idempotent); returns its class."""
    cls = model_class()
    from lm_eval.api.registry import model_registry, register_model

    if NAME not in model_registry or model_registry.get(NAME) is not cls:
        register_model(NAME)(cls)
    return cls


def _task_yamls(include_path: str):
    """(path, parsed config or the parse error) of each YAML under include_path."""
    from lm_eval.tasks._yaml_loader import load_yaml

    for path in sorted(glob.glob(os.path.join(include_path, "**", "*.yaml"), recursive=True)):
        try:
            yield path, load_yaml(path, resolve_func=False)
        except Exception as e:  # noqa: BLE001 -- yaml's many error types; reported, not raised
            yield path, e


def _local_tasks(include_path: str | None) -> set:
    """Names of the plain tasks (one `task: NAME`, not a group) that parsed YAMLs under
    include_path define."""
    return {cfg["task"] for _, cfg in (_task_yamls(include_path) if include_path else ())
            if isinstance(cfg, dict) and isinstance(cfg.get("task"), str) and "group" not in cfg}


def broken_yaml_error(include_path: str | None, names) -> ValueError | None:
    """A YAML under include_path that names one of the tasks and does not parse, said as an
    error (None when there is none)."""
    for path, cfg in (_task_yamls(include_path) if include_path else ()):
        if isinstance(cfg, Exception):
            with open(path, errors="replace") as f:
                named = [n for n in names if re.search(rf"^task:\s*['\"]?{re.escape(n)}\b", f.read(), re.M)]
            if named:
                first = str(cfg).strip().splitlines()
                return ValueError(f"harness task {named[0]!r}: {path} is not valid YAML "
                                  f"({' '.join(first[:3])}); fix the file")
    return None


def unknown_task_error(include_path: str | None, unknown) -> ValueError:
    """Why tasks were not found: a YAML that names one and does not parse, else not there."""
    broken = broken_yaml_error(include_path, unknown)
    if broken is not None:
        return broken
    where = f" (not in the harness or {include_path})" if include_path else " (local tasks need --include_path)"
    return ValueError(f"unknown harness task(s) {unknown}{where}")


def check_local_task(include_path: str | None, names) -> None:
    """A clear error for a task YAML (under include_path) whose local data file is missing."""
    if not include_path:
        return
    for path, cfg in _task_yamls(include_path):
        if not isinstance(cfg, dict) or cfg.get("task") not in names:
            continue
        files = (cfg.get("dataset_kwargs") or {}).get("data_files") or {}
        for f in (files.values() if isinstance(files, dict) else [files]):
            for one in ([f] if isinstance(f, str) else list(f)):
                if "://" not in one and not glob.glob(one):
                    raise FileNotFoundError(f"harness task {cfg['task']!r} ({path}): data file "
                                            f"{one!r} does not exist (relative paths are read from "
                                            f"{os.getcwd()})")


def fewshot_error(manager, names, num_fewshot: int) -> ValueError:
    """lm-eval's "Sample larger than population", said with the number of documents there are."""
    counts = {}
    for name, task in manager.load(names)["tasks"].items():
        own_split = not (task.has_training_docs() or task.has_validation_docs()) and \
            getattr(task.config, "fewshot_split", None) in (None, task.config.test_split)
        counts[name] = len(list(task.fewshot_docs())) - int(own_split)  # never a doc's own example
    short = {n: c for n, c in counts.items() if c < num_fewshot}
    return ValueError(f"--num_fewshot={num_fewshot}: too few documents to draw the examples from: "
                      + ", ".join(f"{n!r} has {c}" for n, c in (short or counts).items())
                      + f"; use --num_fewshot<={min((short or counts).values())}")


def run(workdir: str | None, tasks, *, step: int | None = None, include_path: str | None = None,
        num_fewshot: int = 0, limit: int | None = None, evaluator=None, full: bool = False,
        output_path: str | None = None) -> dict:
    """Harness tasks on a workdir (or an Evaluator): the harness's per-task results dict (with
    full=True simple_evaluate's whole output, what lm_eval's `make_table` reads). output_path:
    lm_eval's own tracker writes its results_<timestamp>.json there (under the model's name)."""
    _lm_eval()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local YAML + local files: no network
    import lm_eval
    from lm_eval.tasks import TaskManager

    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise ValueError("no harness tasks given")
    if include_path and not os.path.isdir(include_path):
        raise FileNotFoundError(f"--include_path={include_path!r} is not a directory")
    # Indexing the harness's own task YAMLs (thousands) takes ~20 s on a laptop CPU; tasks that
    # are all plain local tasks under include_path need only those, so only they are indexed.
    # A local YAML that names a requested task and does not parse is an error at once (not a
    # silent fallback to a built-in task of the same name).
    not_local = [n for n in names if n not in _local_tasks(include_path)]
    broken = broken_yaml_error(include_path, not_local) if not_local else None
    if broken is not None:
        raise broken
    manager = TaskManager(include_path=include_path, include_defaults=bool(not_local))
    unknown = [n for n in names if not manager.match_tasks([n])]
    if unknown:
        raise unknown_task_error(include_path, unknown)
    check_local_task(include_path, names)
    cls = register()
    model = cls(evaluator=evaluator) if evaluator is not None else cls(workdir=workdir, checkpoint=step)
    tracker = None
    if output_path:
        from lm_eval.loggers import EvaluationTracker

        tracker = EvaluationTracker(output_path=output_path)
    try:
        out = lm_eval.simple_evaluate(model=model, tasks=names, num_fewshot=num_fewshot or None,
                                      limit=limit, task_manager=manager, log_samples=False,
                                      bootstrap_iters=0, verbosity="ERROR",
                                      evaluation_tracker=tracker, model_args=f"workdir={workdir}")
    except ValueError as e:
        if "larger than population" in str(e):
            raise fewshot_error(manager, names, num_fewshot) from None
        raise
    if tracker is not None:
        tracker.save_results_aggregated(results=out, samples=None)
    return out if full else out["results"]


def main(argv=None) -> None:
    """`python -m lm.evals.harness ...`: the harness's CLI with the model "lm" registered."""
    try:
        register()
    except ValueError as e:
        sys.exit(f"lm.evals.harness: error: {e}")
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    cli_evaluate()


if __name__ == "__main__":
    main()
