"""What each modern change gives on nanoGPT's baby shakespeare_char run, at the moonshot budget.

    lm run experiments/nanogpt_ablation.py --rung=base        # nanoGPT's config, 1000 steps
    lm run experiments/nanogpt_ablation.py --rung=arch        # rope + rmsnorm + swiglu
    lm run experiments/nanogpt_ablation.py --rung=arch_wsd    # + warmup-stable-decay, lr 2e-3
    (+ Muon on the block matrices = experiments/shakespeare_char.py:modern_1000)

Every rung starts from experiments/shakespeare_char.py's `reproduce` rung (nanoGPT's baby
config, init, decay mask, random windows, and its 200-batch val estimate), runs 1000 steps
(half of nanoGPT's 2000) and adds the changes cumulatively, so rung k minus rung k-1 is what
change k gives on top of the ones before; the last step is the archived shakespeare_char
`modern_1000` record. Criterion: nanoGPT's 2000-step val loss, 1.8857, in 1000 steps.

Archived (val loss, nats/char, 200 random batches; one seed each, so +-0.01 is noise):

    base      nanoGPT's config, cosine over 1000 steps       2.125
    arch      + rotary, RMSNorm, SwiGLU (800k params)        1.803   -0.322
    arch_wsd  + warmup-stable-decay to 0, lr 2e-3            1.798   -0.005
    muon      + Muon on the block matrices (modern_1000)     1.713   -0.085
    (2000 steps: nanoGPT 1.8857, reproduce 1.913, modern 1.612)

Most of it is positions: with learned absolute positions the baby model sits on a ~2.4 plateau
for its first 500 steps (base: 2.442 at step 250, 2.303 at 500), with rotary positions it is
past it by step 250 (arch: 2.126, 1.951 at 500); Muon is the next biggest step.
"""

import importlib.util
import os

from lm.experiment import apply_rung, ladder


def _shakespeare():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shakespeare_char.py")
    spec = importlib.util.spec_from_file_location("shakespeare_char", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg=None):
    sc = _shakespeare()
    c = sc.get_config("reproduce")
    c.experiment.update(
        name="nanogpt_ablation",
        hypothesis=("At nanoGPT's baby size, rotary positions + RMSNorm + SwiGLU, a "
                    "warmup-stable-decay schedule at twice the lr, and Muon each lower the valid "
                    "loss; together they reach nanoGPT's 2000-step 1.8857 in 1000 steps."),
        metric="loss", comparator="<=", threshold=1.8857, split="valid", rung="")
    c.train.steps = 1000
    c.experiment.ladder = ladder(
        base={},  # nanoGPT's baby run, its schedule compressed into 1000 steps
        arch=dict(sc.MODERN_ARCH),
        arch_wsd={**sc.MODERN_ARCH, **sc.MODERN_SCHEDULE},
    )
    return apply_rung(c, arg)
