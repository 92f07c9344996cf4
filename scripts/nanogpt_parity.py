"""nanoGPT's shakespeare_char baby run and lm's `reproduce` rung, side by side to the digit.

Run by hand (needs torch and a nanoGPT checkout; neither is a dependency of lm):

    python scripts/nanogpt_parity.py --nanogpt_dir=/path/to/nanoGPT            # 2000 steps
    python scripts/nanogpt_parity.py --nanogpt_dir=... --seed=1338 --eval_iters=200

Replays nanoGPT's train.py with its CPU "baby" settings (README: --block_size=64
--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --dropout=0.0): torch
seeded as train.py seeds it, nanoGPT's GPT from its model.py, its AdamW decay groups, get_lr,
clip_grad_norm_, and get_batch drawing from torch's generator in train.py's order. lm's
`reproduce` rung (experiments/shakespeare_char.py) starts from nanoGPT's initial weights and
takes the same batches at the same learning rates through its own jitted train step. Prints
both train losses per step, both estimate_loss results at every eval, and the largest param
difference at the end: float32 round-off, not a difference in the math, is what is left.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np


FIXTURE_KEYS = "the --set overrides, steps, inputs, targets, nanoGPT's losses, init/ and final/ params"


def nanogpt_lr(it: int, peak: float, warmup: int, decay_iters: int, min_lr: float) -> float:
    """nanoGPT train.py's get_lr."""
    if it < warmup:
        return peak * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (peak - min_lr)


def torch_to_lm(sd: dict, cfg) -> dict:
    """nanoGPT's state_dict as lm's decoder params, through lm.hf's GPT-2 weight table: nanoGPT
    names its tensors as GPT-2 does, but its projections are torch Linears ([out, in]), the
    transpose of GPT-2's Conv1D ([in, out]). It has no biases; lm_head is tied to wte."""
    from flax import traverse_util

    from lm.hf import weights

    def as_gpt2(name, t):
        t = t.detach().numpy().astype(np.float32)
        linear = t.ndim == 2 and not name.startswith(("transformer.wte", "transformer.wpe"))
        return t.T if linear else t

    arrays = {name: as_gpt2(name, t) for name, t in sd.items()}
    return traverse_util.unflatten_dict({  # the bias entries are skipped: nanoGPT has none
        entry.path: entry.to_lm(*(arrays[name] for name in entry.hf))
        for entry in weights.table("gpt2", cfg) if all(name in arrays for name in entry.hf)})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanogpt_dir", required=True, help="a nanoGPT checkout (its model.py)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--print_every", type=int, default=100)
    ap.add_argument("--eval_interval", type=int, default=250, help="as nanoGPT's config")
    ap.add_argument("--eval_iters", type=int, default=20, help="as nanoGPT's README CPU command")
    ap.add_argument("--lm_schedule", action="store_true",
                    help="drive nanoGPT with lm's schedule instead of its own get_lr (lm always "
                         "follows its own train.schedule; they differ only in the warmup ramp)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override the reproduce rung's config (as lm run --set)")
    ap.add_argument("--fixture", default="",
                    help=f"write {FIXTURE_KEYS} of this run to an .npz (tests/test_nanogpt.py)")
    args = ap.parse_args(argv)

    model_py = os.path.join(args.nanogpt_dir, "model.py")
    if not os.path.isfile(model_py):
        sys.exit(f"--nanogpt_dir: no model.py in {args.nanogpt_dir}")
    sys.path.insert(0, args.nanogpt_dir)
    import jax
    import torch
    from model import GPT, GPTConfig  # nanoGPT's

    from lm import runs, sharding, trainer
    from lm.objectives.language import cross_entropy_sums
    from lm.experiment import load_config

    torch.manual_seed(args.seed)
    config = load_config(os.path.join(os.path.dirname(__file__), "..", "experiments",
                                      "shakespeare_char.py"), "reproduce", args.set)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1})
    run = runs.setup(config, mesh=mesh)
    cfg, t = run.model_cfg, config.train
    gpt = GPT(GPTConfig(block_size=cfg.max_len, vocab_size=cfg.vocab_size, n_layer=cfg.num_layers,
                        n_head=cfg.num_heads, n_embd=cfg.d_model, dropout=0.0, bias=False))
    opt = gpt.configure_optimizers(t.weight_decay, t.learning_rate, (t.b1, t.b2), "cpu")

    init = torch_to_lm(gpt.state_dict(), cfg)
    with sharding.activate(mesh):
        params = jax.device_put(init, run.param_shardings)
    state = runs.init_state(run, params)
    step = trainer.make_train_step(run)

    data = {"train": run.dataset.tokens("train"), "val": run.dataset.tokens("valid")}
    T, B = cfg.max_len, int(t.batch_size)

    def get_batch(split):  # nanoGPT's get_batch, drawing from torch's global generator
        ix = torch.randint(len(data[split]) - T, (B,))
        rows = np.stack([data[split][i:i + T + 1] for i in ix.tolist()]).astype(np.int64)
        return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])

    def lm_batch(x, y):
        ones = np.ones((B, T), np.int32)
        batch = {"inputs": x.astype(np.int32), "targets": y.astype(np.int32),
                 "weights": ones.astype(np.float32), "segment_ids": ones}
        return jax.device_put(batch, sharding.batch_sharding(mesh))

    lm_loss = jax.jit(lambda p, b: cross_entropy_sums(
        run.model.apply({"params": p}, b["inputs"]), b["targets"], b["weights"])["nll_sum"] / (B * T))

    def estimate_loss():  # nanoGPT's estimate_loss, both models on the same batches
        out = {}
        for split in ("train", "val"):
            theirs, ours = [], []
            for _ in range(args.eval_iters):
                x, y = get_batch(split)
                with torch.no_grad():
                    theirs.append(float(gpt(torch.from_numpy(x), torch.from_numpy(y))[1]))
                ours.append(float(lm_loss(state["params"], lm_batch(x, y))))
            out[split] = (np.mean(theirs), np.mean(ours))
        return out

    diffs, record = [], {"inputs": [], "targets": [], "losses": []}
    print(f"{'step':>5} {'lr':>10} {'nanoGPT':>9} {'lm':>9} {'diff':>9}")
    x, y = get_batch("train")
    for it in range(args.steps + 1):
        if it % args.eval_interval == 0 or it == args.steps:
            losses = estimate_loss()
            print("eval " + "  ".join(f"{k}: nanoGPT {a:.4f} lm {b:.4f} ({b - a:+.1e})"
                                      for k, (a, b) in losses.items()) + f"  (after {it} steps)",
                  flush=True)
        if it == args.steps:
            break
        lr = float(run.schedule(it)) if args.lm_schedule else nanogpt_lr(
            it, t.learning_rate, t.warmup_steps, t.steps, t.learning_rate * t.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        _, loss = gpt(torch.from_numpy(x), torch.from_numpy(y))
        state, metrics = step(state, lm_batch(x, y))
        x_next, y_next = get_batch("train")  # nanoGPT fetches the next batch before backward
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), t.grad_clip)
        opt.step()
        ours, theirs = float(metrics["loss"]), loss.item()
        for key, value in zip(record, (x, y, theirs)):
            record[key].append(value)
        x, y = x_next, y_next
        diffs.append(ours - theirs)
        if it % args.print_every == 0 or it == args.steps - 1:
            print(f"{it:5d} {lr:10.3e} {theirs:9.5f} {ours:9.5f} {ours - theirs:+9.2e}", flush=True)

    final = torch_to_lm(gpt.state_dict(), cfg)
    worst = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in
                zip(jax.tree.leaves(state["params"]), jax.tree.leaves(final)))
    print(f"max |loss diff| over {args.steps} steps: {np.max(np.abs(diffs)):.2e}; "
          f"mean diff {np.mean(diffs):+.2e}; max |param diff| at the end: {worst:.2e}")
    if args.fixture:
        flat = lambda tree, tag: {f"{tag}/" + "/".join(k.key for k in path): np.asarray(v)
                                  for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
        np.savez_compressed(args.fixture, sets=np.array(args.set), steps=args.steps,
                            **{k: np.asarray(v) for k, v in record.items()},
                            **flat(init, "init"), **flat(final, "final"))
        print(f"wrote {args.fixture}")


if __name__ == "__main__":
    main()
