"""The first thing to run on a GPU: GPT 124M / 350M / 1B at context 2048, bf16, in one go.

    python -m bench.gpu [--out=bench/results/gpu] [--models=124m,350m,1b,124m_noflash]
        [--steps=10] [--budget_s=480] [--model_timeout_s=150]
    python -m bench.gpu --smoke --out=/tmp/smoke      # CPU, tiny shapes, seconds
    python -m bench.gpu --shakespeare                 # + nanoGPT's shakespeare_char gpu rung

Each model runs in its own child process (`--child=NAME`) with a timeout, so an out-of-memory
error or a hang costs one row, not the run, and each starts with an empty GPU. Per model: the
trainer's own jitted train step (bench.throughput.measure: forward, backward, AdamW) on
synthetic batches: tokens/s, MFU, peak memory per device, trace/lower and compile seconds, and
which attention backend ran (cudnn = flash on; the `_noflash` row forces XLA attention). First,
a loss check: the same tiny model, parameters and batch on the GPU (bf16, auto attention) and
on the CPU (float32); the two losses must agree to 2%.

MFU convention (bench.harness.FLOPS_CONVENTION): model FLOPs per token = 6 N_nonembedding +
12 L T d + 6 d V, forward + backward, recomputation not counted, against the datasheet dense
bf16 peak of the device (bench.hardware; H100 SXM 989 TFLOP/s).

The shapes (PLANS) fit one 80 GB GPU; `need_gib` is the per-device peak from a compile of the
same step (bench.compiled_memory, deviceless TPU v5p compile: an estimate of the GPU's figure).
Results: OUT/results.jsonl (one JSON line per row, with versions and config) and OUT/table.md.
The whole run is bounded by --budget_s (default 8 minutes); rows past it are recorded skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONTEXT = 2048
# batch (global), remat, attention; need_gib: compiled per-device peak (bench/results/
# compiled_memory.jsonl: deviceless TPU v5p compile of this step with the chunked loss wired;
# before: 124m 40.9, 350m 9.5 (remat 'dots' then recomputed everything), 1b 23.3 GiB; 350m
# after not measured yet). The 80 GB budget leaves room for cuDNN workspaces and the GPU
# compiler's own layout.
PLANS = {
    "124m": dict(batch_size=16, remat="none", attention_impl="auto", need_gib=17.1),
    "350m": dict(batch_size=8, remat="dots", attention_impl="auto", need_gib=None),
    "1b": dict(batch_size=8, remat="dots", attention_impl="auto", need_gib=36.9),
    "124m_noflash": dict(batch_size=4, remat="none", attention_impl="xla", need_gib=None),
}
# --smoke: the same code path on a CPU, tiny shapes (seconds).
SMOKE = dict(num_layers=1, num_heads=2, d_model=32, max_len=32, batch_size=4, vocab=256)
LOSS_CHUNK = 512  # positions per step of the chunked cross-entropy: [B, 512, V] f32 at most
LOSS_TOLERANCE = 0.02  # relative: bf16 compute against the f32 reference
NANOGPT_GPU_VALID_LOSS = 1.4697


def gpt_config(name: str, smoke: bool = False):
    """bench/configs/gpt.py's rung at context 2048 with PLANS[name]'s batch, remat, attention."""
    from bench.configs import gpt

    plan = PLANS[name]
    c = gpt.get_config(name.split("_")[0])
    c.model.update(max_len=CONTEXT, dtype="auto", attention_impl=plan["attention_impl"],
                   remat=plan["remat"])
    c.train.batch_size = plan["batch_size"]
    c.train.loss_chunk = LOSS_CHUNK  # the chunked LM head + loss (lm.chunked_loss)
    if smoke:
        s = SMOKE
        c.model.update(num_layers=s["num_layers"], num_heads=s["num_heads"],
                       d_model=s["d_model"], max_len=s["max_len"])
        c.data.update(markov_vocab=s["vocab"], train_tokens=4000, eval_tokens=1000)
        c.train.batch_size = s["batch_size"]
    return c


def attention_backend(run) -> str:
    """The backend model.attention_impl resolves to for this run's shapes (lm.fast_attention)."""
    from lm import fast_attention
    from lm.precision import compute_dtype
    cfg = run.model_cfg
    return fast_attention.choose(cfg.attention_impl, dtype=compute_dtype(cfg),
                                 head_dim=cfg.d_model // cfg.num_heads, q_len=int(run.seq_len),
                                 kv_len=int(run.seq_len), decode=False)


def measure_model(name: str, steps: int, smoke: bool) -> dict:
    """One row: bench.throughput.measure of the model's train step, or the error it raised."""
    from bench import harness, throughput
    config = gpt_config(name, smoke)
    try:
        res, bench = throughput.measure(config, steps=steps, warmup=2)
    except Exception as e:  # out of memory, a backend refusal: the row says so, the run goes on
        return {"row": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:400]}"}
    mem = [m for m in res["peak_memory_bytes_per_device"] if m]
    row = {"row": name, "tokens_per_s": res["tokens_per_s"], "mfu": res["mfu"],
           "peak_gib": round(max(mem) / 2**30, 2) if mem else None,
           "trace_lower_s": res["trace_lower_s"], "compile_s": res["compile_s"],
           "step_ms": res["step_ms_median"], "attention": attention_backend(bench.run),
           "need_gib": PLANS[name]["need_gib"], "final_loss": res["final_loss"]}
    rec = harness.record("gpu", res, config=bench.run.config, bench=bench, extra={"row": dict(row)})
    return {**row, "record": rec}


def loss_check(smoke: bool) -> dict:
    """Initial loss of one tiny model on the default device (compute dtype 'auto') and on the
    CPU in float32, same parameters and tokens."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from lm.config import ModelConfig
    from lm.models import build_model

    def loss(dtype, device):
        cfg = ModelConfig(d_model=64, num_heads=2, num_layers=2, max_len=128, vocab_size=512,
                          dtype=dtype, attention_impl="auto" if dtype == "auto" else "xla")
        model = build_model(cfg)
        tokens = np.random.default_rng(0).integers(0, 512, (4, 129)).astype(np.int32)
        with jax.default_device(device):  # jitted: op by op, init and apply compile every op
            params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens[:, :-1])["params"]
            logits = jax.jit(model.apply)({"params": params}, tokens[:, :-1])
            logp = jax.nn.log_softmax(logits.astype(jnp.float32))
            return -float(jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1)))

    here, cpu = loss("auto", jax.devices()[0]), loss("float32", jax.devices("cpu")[0])
    rel = abs(here - cpu) / abs(cpu)
    return {"row": "loss_check", "device_loss": here, "cpu_f32_loss": cpu,
            "relative_difference": rel, "ok": rel < LOSS_TOLERANCE}


def shakespeare_gpu(path: str = "") -> dict:
    """nanoGPT's shakespeare_char GPU rung trained through lm.trainer.train (about 3 minutes
    on an A100; not in the default 8-minute run): valid loss next to nanoGPT's 1.4697."""
    import tempfile
    from lm import trainer
    from lm.experiment import load_config
    config = load_config("experiments/shakespeare_char.py", "gpu")
    if path:
        config.data.path = path
    config.train.sample_tokens = 0
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-shakespeare-") as workdir:
        summary = trainer.train(config, workdir, progress=False)
    return {"row": "shakespeare_char:gpu", "valid_loss": summary["final"]["loss"],
            "nanogpt_valid_loss": NANOGPT_GPU_VALID_LOSS, "wall_time_s": round(time.time() - t0, 1),
            "compile_s": summary.get("compile_time")}


def run_child(name: str, args) -> dict:
    """`python -m bench.gpu --child=name` under a timeout; its last stdout line is the row."""
    cmd = [sys.executable, "-m", "bench.gpu", f"--child={name}", f"--steps={args.steps}"]
    cmd += ["--smoke"] if args.smoke else []
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.model_timeout_s)
    except subprocess.TimeoutExpired:
        return {"row": name, "error": f"timed out after {args.model_timeout_s}s"}
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode or not lines:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1][:400]
        return {"row": name, "error": f"exit {p.returncode}: {tail}"}
    return json.loads(lines[-1])


def table(rows: list[dict]) -> str:
    head = ("| row | attention | tokens/s | MFU | peak GiB | need GiB | compile s | note |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        if r["row"] == "shakespeare_char:gpu" and "error" not in r:
            lines.append(f"| {r['row']} | | | | | | {r.get('compile_s', '')} | valid loss "
                         f"{r['valid_loss']:.4f} (nanoGPT {NANOGPT_GPU_VALID_LOSS}) in "
                         f"{r['wall_time_s']}s |")
            continue
        if r["row"] == "loss_check":
            note = (f"device {r.get('device_loss', 0):.4f} vs cpu f32 {r.get('cpu_f32_loss', 0):.4f} "
                    f"({'ok' if r.get('ok') else 'MISMATCH'})") if "error" not in r else r["error"]
            lines.append(f"| loss_check | | | | | | | {note} |")
            continue
        mfu = "" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"| {r['row']} | {r.get('attention', '')} | {r.get('tokens_per_s', '')} | "
                     f"{mfu} | {r.get('peak_gib', '')} | {r.get('need_gib') or ''} | "
                     f"{r.get('compile_s', '')} | {r.get('error', '')} |")
    return "\n".join(lines) + "\n"


def write(out: str, rows: list[dict]) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.jsonl"), "a") as f:
        for r in rows:
            f.write(json.dumps(r.get("record", r), default=str) + "\n")
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table(rows))


def run_all(args) -> list[dict]:
    """The loss check, then each model in a child process, within the overall budget."""
    import jax
    from bench import harness
    start = time.monotonic()
    print(f"devices: {jax.devices()}", flush=True)
    try:
        rows = [loss_check(args.smoke)]
    except Exception as e:
        rows = [{"row": "loss_check", "error": f"{type(e).__name__}: {str(e)[:300]}"}]
    for name in args.models.split(","):
        if time.monotonic() - start > args.budget_s - args.model_timeout_s / 3:
            rows.append({"row": name, "error": f"skipped: over the {args.budget_s}s budget"})
            continue
        row = measure_model(name, args.steps, args.smoke) if args.in_process else run_child(name, args)
        print(json.dumps({k: v for k, v in row.items() if k != "record"}), flush=True)
        rows.append(row)
    if args.shakespeare:
        try:
            rows.append(shakespeare_gpu(args.shakespeare_path))
        except Exception as e:  # e.g. no copy of the text and no network: a row, not a crash
            rows.append({"row": "shakespeare_char:gpu", "error": f"{type(e).__name__}: {str(e)[:300]}"})
    for r in rows:
        if "record" not in r:
            r["record"] = harness.record("gpu", {}, extra={"row": dict(r)})
    return rows


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results/gpu", help="folder: results.jsonl, table.md")
    p.add_argument("--models", default=",".join(PLANS))
    p.add_argument("--steps", type=int, default=10, help="timed steps per model")
    p.add_argument("--budget_s", type=float, default=480, help="the whole run")
    p.add_argument("--model_timeout_s", type=float, default=150, help="one model, compile included")
    p.add_argument("--smoke", action="store_true", help="tiny shapes (CPU, seconds)")
    p.add_argument("--in_process", action="store_true", help="no child processes (tests)")
    p.add_argument("--shakespeare", action="store_true", help="then train shakespeare_char:gpu")
    p.add_argument("--shakespeare_path", default="", help="a local tinyshakespeare input.txt")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [m for m in args.models.split(",") + ([args.child] if args.child else [])
               if m not in PLANS]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; choose from {', '.join(PLANS)}")
    return args


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.child:  # one row as the last stdout line
        row = measure_model(args.child, args.steps, args.smoke)
        print(json.dumps(row, default=str))
        return 0
    rows = run_all(args)
    write(args.out, rows)
    print("\n" + table(rows) + f"\nwritten to {args.out}/results.jsonl and table.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
