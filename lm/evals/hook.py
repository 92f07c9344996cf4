"""The trainer's eval hook: config.evals.tasks at every eval, as flat `task/<task>/<metric>` keys
(the trainer prefixes eval_ in the history, like every eval metric)."""

from __future__ import annotations

from lm.evals import runner, tasks as tasks_lib
from lm.evals.api import Evaluator


class TaskEval:
    """Built once per training run (it validates evals.*); called with the params at each eval.
    The Evaluator (and so its compiled programs) is kept between calls."""

    def __init__(self, run):
        e = run.config.evals
        self.names = tasks_lib.parse_tasks(e.tasks)
        if e.num_examples < 1 or e.num_fewshot < 0 or e.sample_temperature < 0:
            raise ValueError(f"evals.num_examples={e.num_examples} must be >= 1, evals.num_fewshot="
                             f"{e.num_fewshot} >= 0 and evals.sample_temperature={e.sample_temperature} >= 0")
        self.run, self.ev = run, None
        self.settings = dict(num_examples=int(e.num_examples), num_fewshot=int(e.num_fewshot),
                             seed=int(e.seed), sample_temperature=float(e.sample_temperature))

    def __call__(self, params) -> dict:
        if self.ev is None:
            self.ev = Evaluator.from_run(self.run, params)
        else:
            self.ev.params = params
        return runner.flat(runner.run_tasks(self.ev, self.names, **self.settings))


def maybe(run):
    """A TaskEval when the config names tasks, else None."""
    return TaskEval(run) if tasks_lib.parse_tasks(run.config.evals.tasks) else None
