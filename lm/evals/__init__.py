"""Evaluation beyond the loss: task abilities.

    lm/evals/api.py      Evaluator: loglikelihood, loglikelihood_rolling, generate_until
    lm/evals/tasks.py    built-in synthetic tasks (seeded, few-shot), the task registry
    lm/evals/metrics.py  exact match / accuracy and the continuous metrics beside them
    lm/evals/runner.py   run tasks on an Evaluator
    lm/evals/criteria.py `task:<task>/<metric>` experiment criteria -> record keys
    lm/evals/hook.py     the trainer's hook: config.evals.tasks at every eval
    lm/evals/harness.py  lm-evaluation-harness adapter (optional extra `eval`)

Layering: api/runner need the model, sampling and sharding (not the trainer; the trainer's
eval hook uses them); only Evaluator.from_workdir reaches the trainer, lazily.
"""
