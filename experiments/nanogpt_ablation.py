"""What each modern change gives on nanoGPT's baby shakespeare_char run (2000 steps, same data).

    lm run experiments/nanogpt_ablation.py --rung=arch        # rope + rmsnorm + swiglu
    lm run experiments/nanogpt_ablation.py --rung=arch_wsd    # + warmup-stable-decay, lr 2e-3
    lm run experiments/nanogpt_ablation.py --rung=muon        # + Muon: shakespeare_char:modern

Every rung starts from experiments/shakespeare_char.py's `reproduce` rung (nanoGPT's baby
config, init, decay mask, random windows, and its 200-batch val estimate) and adds the changes
cumulatively, so rung k minus rung k-1 is what change k gives on top of the ones before. The
endpoints are the archived shakespeare_char `reproduce` (nanoGPT: 1.8857) and `modern` records.
Criterion: beat nanoGPT's 1.8857 nats/char clearly, by at least 0.02.
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
        hypothesis=("At nanoGPT's baby size and 2000 steps, rotary positions + RMSNorm + SwiGLU, "
                    "a warmup-stable-decay schedule at twice the lr, and Muon each lower the "
                    "valid loss below nanoGPT's 1.8857."),
        metric="loss", comparator="<=", threshold=1.8657, split="valid", rung="")
    c.experiment.ladder = ladder(
        arch=dict(sc.MODERN_ARCH),
        arch_wsd={**sc.MODERN_ARCH, **sc.MODERN_SCHEDULE},
        muon=dict(sc.MODERN),
    )
    return apply_rung(c, arg)
