"""Experiment criteria on task metrics: `experiment.metric = "task:<task>/<metric>"`.

    task:addition_3/exact_match  ->  final["task/addition_3/exact_match"]
                                     history "eval_task/addition_3/exact_match" (every eval)
    its continuous surrogate     ->  final["task/addition_3/answer_nll"] (not the valid loss)

Other metrics (loss, bits_per_byte, ...) keep their keys and the valid loss as surrogate.
"""

from __future__ import annotations

from lm.evals import metrics as metrics_lib
from lm.evals import tasks as tasks_lib

PREFIX = "task:"
SURROGATE = "answer_nll"


def is_task_metric(metric: str) -> bool:
    return isinstance(metric, str) and metric.startswith(PREFIX)


def parse(metric: str) -> tuple[str, str]:
    """'task:addition_3/exact_match' -> ('addition_3', 'exact_match'); a clear error otherwise."""
    task, sep, name = metric[len(PREFIX):].partition("/")
    if not sep or not task or name not in metrics_lib.METRICS:
        raise ValueError(f"experiment.metric {metric!r}: a task criterion reads "
                         f"task:<task>/<metric> with metric one of {metrics_lib.METRICS}")
    canonical = tasks_lib.get_task(task).name
    if canonical != task:  # one spelling: the history keys and the scaling fits read this name
        raise ValueError(f"experiment.metric {metric!r}: write the task's full name, "
                         f"task:{canonical}/{name}")
    return canonical, name


def final_key(metric: str) -> str:
    """The key of a criterion's metric in the final metrics (and, with 'eval_', in the history)."""
    if not is_task_metric(metric):
        return metric
    task, name = parse(metric)
    return f"task/{task}/{name}"


def history_key(metric: str) -> str:
    return "eval_" + final_key(metric)


def surrogate_key(metric: str) -> str:
    """The continuous quantity a trend is fitted to: the task's answer NLL, else the valid loss."""
    if not is_task_metric(metric):
        return "loss"
    return f"task/{parse(metric)[0]}/{SURROGATE}"


def check_experiment(config) -> None:
    """A task criterion needs its task among evals.tasks (so every eval measures it)."""
    metric = config.experiment.metric
    if not is_task_metric(metric):
        return
    task, _ = parse(metric)
    listed = [tasks_lib.get_task(n).name for n in tasks_lib.parse_tasks(config.evals.tasks)]
    if task not in listed:
        raise ValueError(f"experiment.metric {metric!r} needs task {task!r} in evals.tasks "
                         f"(got {config.evals.tasks!r}): the trainer evaluates only those")
