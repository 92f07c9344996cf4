"""Side by side in one process: our train step against nanoGPT's (PyTorch, eager) on CPU.

    python -m bench.nanogpt_compare --config=bench/configs/nanogpt.py:baby --nanogpt_dir=/path/to/nanoGPT
        [--rounds=5] [--steps=10] [--torch_threads=0]

nanoGPT is not part of this repository: --nanogpt_dir points at a checkout of it, whose
model.py (GPT, GPTConfig) is imported from there. Its step is the one of nanoGPT's train.py
loop: forward, backward, clip_grad_norm_(1.0), AdamW (its configure_optimizers), zero_grad.
Ours is the trainer's jitted step. Both get random batches of the same shape; the two are
timed in alternating rounds of `steps` steps, so a change of machine load hits both alike.
The JSON line (benchmark "nanogpt_compare") holds both medians and their ratio.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # must run before JAX is imported
    from bench import force_host_devices
    force_host_devices(sys.argv)

import os
import sys
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from bench import harness


def define_flags():
    """Command-line flags (defined only when run as a program, so modules import cleanly)."""
    flags.DEFINE_integer("host_devices", 0, "Split the CPU into this many host devices "
                         "(read before JAX starts; the mesh's data axis then spans them).")
    global _CONFIG, _DIR, _ROUNDS, _STEPS, _THREADS, _RESULTS, _NOTE
    _CONFIG = config_flags.DEFINE_config_file("config", "bench/configs/nanogpt.py:baby", "Config file[:arg].")
    _DIR = flags.DEFINE_string("nanogpt_dir", None, "A checkout of nanoGPT (holds model.py).")
    _ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds.")
    _STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per round and framework.")
    _THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0 = os.cpu_count()).")
    _RESULTS = flags.DEFINE_string("results_dir", "bench/results", "Where <device>.jsonl goes ('' = don't write).")
    _NOTE = flags.DEFINE_string("note", "", "Free text stored with the result.")


def torch_step_fn(config, nanogpt_dir: str, threads: int):
    """nanoGPT's model and optimizer for `config`; returns (step() -> loss, torch version)."""
    if not os.path.isfile(os.path.join(nanogpt_dir, "model.py")):
        raise FileNotFoundError(f"--nanogpt_dir={nanogpt_dir}: no model.py there (a nanoGPT checkout?)")
    import torch
    sys.path.insert(0, nanogpt_dir)
    try:
        from model import GPT, GPTConfig  # nanoGPT's, from the user's checkout
    finally:
        sys.path.remove(nanogpt_dir)
    torch.set_num_threads(threads or os.cpu_count())
    torch.manual_seed(0)
    m, t = config.model, config.train
    model = GPT(GPTConfig(block_size=m.max_len, vocab_size=m.vocab_size, n_layer=m.num_layers,
                          n_head=m.num_heads, n_embd=m.d_model, dropout=m.dropout, bias=m.use_bias))
    opt = model.configure_optimizers(t.weight_decay, t.learning_rate, (t.b1, t.b2), "cpu")
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(2):
        s = rng.integers(0, m.vocab_size, (t.batch_size, m.max_len + 1))
        seqs.append((torch.from_numpy(s[:, :-1].copy()), torch.from_numpy(s[:, 1:].copy())))
    count = [0]

    def step():
        x, y = seqs[count[0] % 2]
        count[0] += 1
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step, torch.__version__, torch.get_num_threads()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _DIR.value:
        raise app.UsageError("--nanogpt_dir is required (a local nanoGPT checkout)")
    bench = harness.prepare(_CONFIG.value)
    config = bench.run.config
    compiled, _, compile_s = harness.compile_step(bench)
    state, _ = harness.time_steps(compiled, bench.state, bench.batches, 3)
    tstep, torch_version, threads = torch_step_fn(config, _DIR.value, _THREADS.value)
    for _ in range(3):
        tstep()
    ours, theirs = [], []
    for _ in range(_ROUNDS.value):
        state, times = harness.time_steps(compiled, state, bench.batches, _STEPS.value)
        ours += times
        for _ in range(_STEPS.value):
            t0 = time.perf_counter()
            tstep()
            theirs.append(time.perf_counter() - t0)
    tok = bench.tokens_per_step
    res = {
        "ours": harness.step_stats(ours, tok, bench.flops_per_token, float("nan")),
        "nanogpt": harness.step_stats(theirs, tok, bench.flops_per_token, float("nan")),
        "compile_s": round(compile_s, 3),
        "rounds": _ROUNDS.value, "steps_per_round": _STEPS.value,
        "torch": torch_version, "torch_threads": threads,
    }
    for r in (res["ours"], res["nanogpt"]):
        r.pop("mfu")
    res["speed_ratio_median"] = round(res["nanogpt"]["step_ms_median"] / res["ours"]["step_ms_median"], 3)
    res["speed_ratio_best"] = round(res["nanogpt"]["step_ms_min"] / res["ours"]["step_ms_min"], 3)
    extra = {"note": _NOTE.value} if _NOTE.value else {}
    rec = harness.record("nanogpt_compare", res, config=config, bench=bench, extra=extra)
    o, n = res["ours"], res["nanogpt"]
    harness.publish(rec, f"{config.experiment.rung}: ours {o['step_ms_median']:.1f} ms/step "
                    f"({o['tokens_per_s']:.0f} tok/s), nanoGPT {n['step_ms_median']:.1f} ms/step "
                    f"({n['tokens_per_s']:.0f} tok/s): ours/nanoGPT speed "
                    f"{res['speed_ratio_median']:.2f}x (best-step {res['speed_ratio_best']:.2f}x)",
                    _RESULTS.value)

if __name__ == "__main__":
    define_flags()
    app.run(main)
