"""The trainer: train state, jitted train / eval steps over a device mesh, the loop.

    train(config, workdir)        train (or resume) and return a summary dict
    evaluate(params, ...)         loss, bits per byte, perplexity, accuracy on a split (lm.evaluation)
    load_workdir(workdir)         (config, model, params, dataset) of a trained workdir

The train state is a plain dict {step, params, opt_state, rng} (DPO adds the frozen ref_params). Steps are `jax.jit` with
in/out shardings from the logical-axis rules (lm.sharding) and a donated state: the modern
form of pjit. Inside the loop Python only feeds batches (built one ahead on a thread and put
on the devices early); losses come back to the host every log_every steps, not every step.

The workdir holds config.json (the resolved config), metrics.jsonl (one JSON per logged
step), summary.json, TensorBoard events under tb/, the tokenizer and checkpoints/ (Orbax).
Rerunning the same command resumes from the newest checkpoint, cutting metrics.jsonl back to
that step so every step appears exactly once.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import queue
import signal
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from lm import checkpoint as ckpt_lib
from lm import guard as guard_lib
from lm import devices, objectives, optim, remote, sharding
from lm.evaluation import eval_params, evaluate, make_eval_step, run_eval  # noqa: F401  (trainer API)
from lm import trackers
from lm import workdir as workdir_files
from lm.files import atomic_write
from lm.workdir import read_metrics  # noqa: F401  (part of the trainer API)
from lm.config import ConfigError, ModelConfig, model_config
from lm.precision import resolve_dtype


# ----------------------------------------------------------------------------- setup

@dataclasses.dataclass
class Run:
    """Everything a training or evaluation run is built from (no device state)."""

    config: ml_collections.ConfigDict
    model_cfg: ModelConfig
    model: nn.Module
    dataset: object
    mesh: jax.sharding.Mesh
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    param_specs: object  # logical PartitionSpecs of the params
    state_shardings: dict
    abstract_state: dict  # ShapeDtypeStructs with shardings (restore target)
    restored_step: int | None = None  # load_run: the checkpoint step it restored

    @property
    def param_shardings(self):
        return self.state_shardings["params"]

    @property
    def seq_len(self) -> int:
        return self.model_cfg.max_len


def _validate(config) -> ModelConfig:
    mcfg = model_config(config)
    objective = config.train.objective
    if objective not in objectives.OBJECTIVES:
        raise ConfigError(f"train.objective: {objective!r} is not one of {sorted(objectives.OBJECTIVES)}")
    if objectives.OBJECTIVES[objective] != mcfg.kind:
        raise ConfigError(f"train.objective={objective!r} needs model.kind="
                          f"{objectives.OBJECTIVES[objective]!r}, got {mcfg.kind!r}")
    t = config.train
    for key in ("steps", "batch_size", "log_every"):
        if t[key] <= 0:
            raise ConfigError(f"train.{key}={t[key]}: must be positive")
    for key in ("eval_every", "eval_batches", "checkpoint_every", "warmup_steps", "sample_tokens"):
        if t[key] < 0:
            raise ConfigError(f"train.{key}={t[key]}: must be >= 0")
    if (objective == "dpo") != (config.data.source == "preference"):
        raise ConfigError("train.objective=dpo and data.source=preference go together "
                          f"(got objective={objective!r}, source={config.data.source!r})")
    if objective == "dpo" and not (t.dpo_beta > 0 and 0 <= t.dpo_label_smoothing < 0.5):
        raise ConfigError(f"train.dpo_beta={t.dpo_beta} must be > 0 and train.dpo_label_smoothing="
                          f"{t.dpo_label_smoothing} in [0, 0.5)")
    if objective == "prefix_lm" and mcfg.max_len < 2:
        raise ConfigError("model.max_len: prefix_lm needs at least 2 tokens to split")
    optim.learning_rate_schedule(t)  # validates the schedule name
    sharding.enable_compilation_cache(t.compilation_cache_dir)
    return mcfg


def _check_workdir(workdir: str | None, config) -> None:
    """Refuse a workdir that is a file or that holds a run of a different model or data."""
    if not workdir:
        return
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir} is a file, not a directory")
    saved = os.path.join(workdir, "config.json")
    if not os.path.exists(saved):
        return
    old = workdir_files.read_json(saved)
    new = config.to_dict()
    for section in ("model", "data"):
        for key, value in new[section].items():
            if section == "model" and key == "vocab_size":  # filled in from the tokenizer
                continue
            if section == "data" and key in ("store_dir", "store_verify"):  # where, not what
                continue
            if section == "data" and workdir_files.is_recorded_location(workdir, key, value):
                continue
            was = old.get(section, {}).get(key, value)
            if key == "dtype":  # 'auto' (the default now) is float32 on CPU: same run
                was, value = resolve_dtype(was), resolve_dtype(value)
            if _jsonable(was) != _jsonable(value):
                raise ConfigError(
                    f"--workdir={workdir} holds a run with {section}.{key}={was!r}, not {value!r}; "
                    "use a new workdir (or the old config) to resume")


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))


def _dummy_batch(rows: int, seq_len: int) -> dict:
    z = jnp.zeros((rows, seq_len), jnp.int32)
    return {"inputs": z, "targets": z, "weights": jnp.zeros((rows, seq_len), jnp.float32),
            "segment_ids": jnp.ones((rows, seq_len), jnp.int32)}


def _init_fn(model, mcfg: ModelConfig, objective: str, rows: int):
    """rng -> boxed params (with logical axis names)."""
    def init(rng):
        b = objectives.split_batch(_dummy_batch(rows, mcfg.max_len),
                                   "prefix_lm" if objective == "prefix_lm" else "next_token")
        r = {"params": rng, "dropout": rng}
        if objective == "prefix_lm":
            variables = model.init(r, b["src"], b["inputs"])
        else:
            variables = model.init(r, b["inputs"])
        return variables["params"]
    return init


def setup(config, workdir: str | None = None, *, mesh=None) -> Run:
    """Validate the config, build mesh, dataset, model, optimizer and all shardings.

    Every check that can fail on bad input runs before the workdir is touched. Returns a
    Run whose config has model.vocab_size filled in from the tokenizer.
    """
    from lm import models
    from lm.data import build_dataset

    config = copy.deepcopy(config)
    if config.get("init_from"):  # the pretrained model's architecture and tokenizer
        from lm.hf import pretrained
        config = pretrained.apply(config, workdir)
    mcfg = _validate(config)
    t = config.train
    if mesh is None:
        mesh = sharding.make_mesh(config.mesh, batch_size=t.batch_size // max(t.grad_accum, 1))
    sharding.check_divisible(mcfg, t.batch_size, t.grad_accum, mesh)
    _check_workdir(workdir, config)

    dataset = build_dataset(config.data, mcfg.max_len, workdir=workdir, seed=config.seed)
    config.model.vocab_size = int(dataset.vocab_size)
    mcfg = model_config(config)
    model = models.build_model(mcfg)

    rows = sharding.batch_axis_size(mesh)
    with sharding.activate(mesh):
        boxed = jax.eval_shape(_init_fn(model, mcfg, t.objective, rows), jax.random.PRNGKey(0))
    param_specs = nn.get_partition_spec(boxed)
    param_shardings = sharding.logical_shardings(boxed, mesh)
    params_struct = nn.unbox(boxed)
    tx = optim.make_optimizer(t, params_struct, param_specs)
    opt_struct = jax.eval_shape(tx.init, params_struct)
    rep = sharding.replicated(mesh)
    state_shardings = {
        "step": rep, "rng": rep, "params": param_shardings,
        "opt_state": sharding.like_params(opt_struct, params_struct, param_shardings, mesh),
    }
    abstract = {"step": jax.ShapeDtypeStruct((), jnp.int32),
                "rng": jax.ShapeDtypeStruct((2,), jnp.uint32),
                "params": params_struct, "opt_state": opt_struct}
    if t.objective == "dpo":  # the frozen reference travels (and is saved) with the state
        state_shardings["ref_params"], abstract["ref_params"] = param_shardings, params_struct
    abstract = ckpt_lib.abstract_like(abstract, state_shardings)
    return Run(config, mcfg, model, dataset, mesh, tx, optim.learning_rate_schedule(t),
               param_specs, state_shardings, abstract)


def init_state(run: Run, params=None) -> dict:
    """Fresh train state, created directly in its sharded layout; `params` (already placed in
    run.param_shardings, e.g. a pretrained model) replace the random initialisation."""
    t = run.config.train
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(run.config.seed))
    init = _init_fn(run.model, run.model_cfg, t.objective, sharding.batch_axis_size(run.mesh))
    def fresh(rng):
        params = nn.unbox(init(rng))
        return params, run.tx.init(params)

    with sharding.activate(run.mesh):  # one jit: params and optimizer state born sharded
        if params is None:
            params, opt_state = jax.jit(fresh, out_shardings=(
                run.param_shardings, run.state_shardings["opt_state"]))(init_rng)
        else:
            opt_state = jax.jit(run.tx.init, out_shardings=run.state_shardings["opt_state"])(params)
    rep = sharding.replicated(run.mesh)
    state = {"step": jax.device_put(jnp.zeros((), jnp.int32), rep),
             "rng": jax.device_put(train_rng, rep), "params": params, "opt_state": opt_state}
    if t.objective == "dpo":
        state["ref_params"] = reference_copy(run, params)
    return state


def reference_copy(run: Run, params):
    """A frozen copy of the starting params (new buffers: the train step donates the policy's)."""
    with sharding.activate(run.mesh):
        return jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=run.param_shardings)(params)


# ----------------------------------------------------------------------------- steps

def _aux_loss(mutated):
    from lm import models
    return models.aux_loss(mutated)


def make_train_step(run: Run):
    """jit(state, batch) -> (state, metrics): one optimizer step over the global batch.

    With grad_accum A the batch is cut into A micro-batches (row i goes to micro-batch
    i % A, so each device keeps its own rows) and the gradients are summed in a scan. Losses
    are normalised by the weight of the whole batch, so A only changes memory, not the math.
    """
    t, mcfg, model = run.config.train, run.model_cfg, run.model
    objective, masking = t.objective, bool(run.config.data.document_masking)
    accum, z_loss = int(t.grad_accum), float(t.z_loss)
    deterministic = mcfg.dropout == 0.0
    micro_sharding = jax.sharding.NamedSharding(
        run.mesh, jax.sharding.PartitionSpec(None, ("data", "fsdp")))

    def loss_fn(params, batch, rng, total_weight, ref_params=None):
        if objective == "dpo":
            sums, mutated = objectives.dpo_sums(
                model, params, ref_params, batch, beta=float(t.dpo_beta),
                label_smoothing=float(t.dpo_label_smoothing), deterministic=deterministic,
                rng=None if deterministic else rng)
            aux = mcfg.moe_aux_weight * _aux_loss(mutated) / accum
            return sums["dpo_sum"] / total_weight + aux, (sums, aux)
        logits, targets, weights, mutated = objectives.forward(
            model, params, batch, objective=objective, document_masking=masking,
            deterministic=deterministic, rng=None if deterministic else rng)
        sums = objectives.cross_entropy_sums(logits, targets, weights, z_loss)
        aux = mcfg.moe_aux_weight * _aux_loss(mutated) / accum  # models.aux_loss is unweighted
        loss = (sums["nll_sum"] + sums["z_sum"]) / total_weight + aux
        return loss, (sums, aux)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step_fn(state, batch):
        params, ref_params = state["params"], state.get("ref_params")
        rng = jax.random.fold_in(state["rng"], state["step"])
        total_weight = jnp.maximum(
            jnp.sum(objectives.split_batch(batch, objective)["weights"]), 1.0)
        if accum == 1:
            (_, (sums, aux)), grads = grad_fn(params, batch, rng, total_weight, ref_params)
        else:
            def split(x):
                x = x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)
                return jax.lax.with_sharding_constraint(x, micro_sharding)

            def body(carry, xs):
                micro, i = xs
                # Tie the weights to this micro-batch: otherwise XLA hoists every layer's FSDP
                # all-gather out of the loop and all gathered weights live at once.
                (p, r), micro = jax.lax.optimization_barrier(((params, ref_params), micro))
                (_, (s, a)), g = grad_fn(p, micro, jax.random.fold_in(rng, i), total_weight, r)
                return jax.tree.map(jnp.add, carry, (g, s, a)), None

            zeros = jax.tree.map(jnp.zeros_like, params)
            zero_sums = {k: jnp.zeros((), jnp.float32) for k in objectives.sum_names(objective)}
            (grads, sums, aux), _ = jax.lax.scan(
                body, (zeros, zero_sums, jnp.zeros((), jnp.float32)),
                (jax.tree.map(split, batch), jnp.arange(accum)))
        updates, opt_state = run.tx.update(grads, state["opt_state"], params)
        new_state = {**state, "step": state["step"] + 1,
                     "params": optax.apply_updates(params, updates), "opt_state": opt_state}
        if objective == "dpo":
            metrics = objectives.dpo_metrics(sums)
        else:
            metrics = {"loss": sums["nll_sum"] / total_weight, "z_loss": sums["z_sum"] / total_weight,
                       "accuracy": sums["correct_sum"] / total_weight}
        metrics.update(aux_loss=aux, grad_norm=optax.tree.norm(grads),
                       learning_rate=run.schedule(state["step"]))
        return new_state, metrics

    rep = sharding.replicated(run.mesh)
    return jax.jit(step_fn, in_shardings=(run.state_shardings, sharding.batch_sharding(run.mesh)),
                   out_shardings=(run.state_shardings, rep), donate_argnums=0)


# ----------------------------------------------------------------------------- input feeding

class _Prefetch:
    """Builds the next batches on a thread and puts them on the devices ahead of use.

    Yields (global batch, iterator state after that batch): checkpointing the state that
    came with the last consumed batch resumes exactly there, however far ahead we read.
    """

    def __init__(self, iterator, mesh, depth: int = 2):
        self._it, self._mesh = iterator, mesh
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self):
        try:
            while not self._stop.is_set():
                local = next(self._it)
                item = (sharding.global_batch(local, self._mesh), self._it.state())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
        except BaseException as e:  # handed to the consumer
            self._queue.put(e)

    def next(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)


# ----------------------------------------------------------------------------- sampling

def sample_text(run: Run, params, *, prompt: str = "", max_new_tokens: int = 200,
                temperature: float = 0.8, seed: int = 0) -> str:
    """A short continuation of `prompt` (empty: start from a newline or the EOS token)."""
    tok = run.dataset.tokenizer
    ids = np.asarray(tok.encode(prompt) if prompt else [], np.int32)
    if ids.size == 0:
        start = tok.encode("\n")
        ids = np.asarray(start[-1:] if len(start) else [tok.eos_id or 0], np.int32)
    max_new = max(0, min(max_new_tokens, run.model_cfg.max_len - ids.size))
    if max_new == 0:
        return prompt
    from lm import sampling

    new = sampling.generate(run.model, params, ids, max_new_tokens=max_new,
                            temperature=temperature, seed=seed, eos_id=tok.eos_id)
    return prompt + tok.decode(np.asarray(new, np.int32))


# ----------------------------------------------------------------------------- the loop

def train(config, workdir: str, *, progress: bool = True) -> dict:
    """Train (resuming from workdir's newest checkpoint if any) and return a summary dict:
    step, final (valid eval metrics), history, num_params, flops_per_token, tokens_seen,
    wall_time, mesh, devices, sample."""
    t_start = time.time()
    workdir, mirror = remote.localize(workdir)  # a gs:// workdir: small files mirrored here
    run = setup(config, workdir)  # every check of the input, before the workdir is touched
    if jax.process_index() == 0:
        trackers.validate(run.config)  # a bad train.trackers fails before checkpoints or metrics
    os.makedirs(workdir, exist_ok=True)
    # The guard: workdir lock, SIGTERM/SIGINT -> checkpoint at the next step, NaN/Inf stop.
    with guard_lib.Guard(workdir, lock=jax.process_index() == 0) as guard:
        return _train(run, workdir, guard, progress=progress, t_start=t_start, mirror=mirror)


def _train(run: Run, workdir: str, guard, *, progress: bool, t_start: float, mirror=None) -> dict:
    from lm import models

    config, t = run.config, run.config.train
    from lm.evals import hook as evals_hook  # config.evals.tasks at every eval (None if empty)

    task_eval = evals_hook.maybe(run)
    main = jax.process_index() == 0
    if main:
        atomic_write(os.path.join(workdir, "config.json"),
                      json.dumps(config.to_dict(), indent=2, default=str) + "\n")
        workdir_files.write_data_location(workdir, config.data)

    ckpts = ckpt_lib.Checkpoints(mirror.url if mirror else workdir, keep=t.keep_checkpoints)
    train_it = run.dataset.train_iterator(
        t.batch_size, seed=config.seed, **sharding.feed_slice(run.mesh))
    latest = ckpts.latest_step()
    if latest is not None or ckpt_lib.step_dirs(ckpts.directory):
        try:
            state, data_state = ckpts.restore(run.abstract_state)  # the newest good one
            ckpts.quarantine(ckpts.bad_steps if main else [])
        except BaseException:
            ckpts.close()  # else Orbax's threads die noisily at exit
            raise
        train_it.restore(data_state)
        start = int(jax.device_get(state["step"]))
        guard.saved(start)
    else:
        from lm.hf import pretrained  # init_from: pretrained params (None: random init)
        state, start = init_state(run, pretrained.initial_params(run)), 0

    metrics_log = workdir_files.MetricsLog(  # + W&B / MLflow when train.trackers asks
        os.path.join(workdir, "metrics.jsonl"), start, enabled=main,
        trackers=trackers.start(config, workdir, start) if main else ())
    history = list(metrics_log.history) if main else []
    writer = workdir_files.summary_writer(os.path.join(workdir, "tb"), start) if main else None

    train_step = make_train_step(run)
    eval_step = make_eval_step(run.model, config, run.dataset.tokenizer.token_bytes, run.mesh,
                               eval_params(run.state_shardings))
    tokens_per_step = t.batch_size * run.seq_len
    bar = None
    if progress and main and start < t.steps:
        from tqdm.auto import tqdm
        bar = tqdm(total=t.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)

    feed = _Prefetch(train_it, run.mesh) if start < t.steps else None
    compile_time, last_time, last_step = None, None, start
    crash_at = int(os.environ.get("LM_CRASH_AT_STEP", "0") or 0)
    data_state = train_it.state()
    final = None
    try:
        with sharding.activate(run.mesh):
            for step in range(start, t.steps):
                batch, data_state = feed.next()
                state, metrics = devices.settle(run.mesh, train_step(state, batch))
                done = step + 1
                if last_time is None:  # the first step compiles: time from its end
                    jax.block_until_ready(metrics["loss"])
                    compile_time = time.time() - t_start
                    last_time, last_step = time.time(), done
                evaluated = t.eval_every and done % t.eval_every == 0 or done == t.steps
                if done % t.log_every == 0 or evaluated:
                    record = {"step": done, **{k: float(v) for k, v in jax.device_get(metrics).items()}}
                    now = time.time()
                    record["tokens_per_sec"] = (
                        (done - last_step) * tokens_per_step / (now - last_time)
                        if done > last_step else None)
                    if evaluated:
                        final = run_eval(eval_step, eval_params(state), run.dataset, config,
                                          run.mesh, "valid", t.eval_batches)
                        final.update(task_eval(state["params"]) if task_eval else {})
                        record.update({f"eval_{k}": v for k, v in final.items()})
                    history.append(record)
                    metrics_log.write(record)
                    guard.check_metrics(record)
                    if writer is not None:
                        for k, v in record.items():
                            if k != "step" and isinstance(v, (int, float)):
                                writer.add_scalar(k.replace("eval_", "eval/"), v, done)
                        writer.flush()
                    if bar is not None:
                        post = {"loss": f"{record['loss']:.3f}"}
                        if record["tokens_per_sec"]:
                            post["tok/s"] = f"{record['tokens_per_sec']:.0f}"
                        if evaluated:
                            post.update(_headline(final))
                        bar.set_postfix(post, refresh=False)
                    last_time, last_step = time.time(), done
                if bar is not None:
                    bar.update(1)
                stop = guard.should_stop(done, sync=done % t.log_every == 0)
                if (t.checkpoint_every and done % t.checkpoint_every == 0) or done == t.steps or stop:
                    guard.check_state(state, done)  # a diverged state is never saved
                    ckpts.save(done, state, data_state)
                    guard.saved(done)
                    if mirror:
                        mirror.push()
                if stop:
                    raise guard.stopped(done)
                if done == crash_at:  # fault injection for the resume tests: a real kill -9
                    os.kill(os.getpid(), signal.SIGKILL)
    finally:
        if feed is not None:
            feed.close()
        if bar is not None:
            bar.close()
        ckpts.close()
        metrics_log.close()
        if writer is not None:
            writer.close()

    if final is None:  # resumed at the end: evaluate the restored state
        final = run_eval(eval_step, eval_params(state), run.dataset, config, run.mesh, "valid",
                          t.eval_batches)
        final.update(task_eval(state["params"]) if task_eval else {})
    sample = ""
    if t.sample_tokens and jax.process_count() == 1:
        sample = sample_text(run, state["params"], prompt=t.sample_prompt,
                             max_new_tokens=t.sample_tokens, seed=config.seed)
    summary = {
        "step": int(jax.device_get(state["step"])),
        "final": final,
        "history": history,
        "num_params": int(sum(x.size for x in jax.tree.leaves(run.abstract_state["params"]))),
        "flops_per_token": float(models.flops_per_token(run.model_cfg)),
        "tokens_seen": int(t.steps * tokens_per_step),
        "wall_time": time.time() - t_start,
        "compile_time": compile_time,
        "mesh": sharding.describe(run.mesh),
        "devices": [str(d) for d in run.mesh.devices.flat],
        "process_count": jax.process_count(),
        "sample": sample,
    }
    if main:
        atomic_write(os.path.join(workdir, "summary.json"),
                      json.dumps(summary, indent=2, default=str) + "\n")
    if mirror:
        mirror.push()
    return summary


def _headline(final: dict) -> dict:
    """The progress bar's eval figure: bits per byte, or preference accuracy for DPO."""
    if "preference_accuracy" in final:
        return {"valid_pref_acc": f"{final['preference_accuracy']:.3f}"}
    return {"valid_bpb": f"{final['bits_per_byte']:.3f}"}


def summary_line(summary: dict) -> str:
    f = summary["final"]
    if "preference_accuracy" in f:
        return (f"step {summary['step']}: valid DPO loss {f['loss']:.4f}, preference accuracy "
                f"{f['preference_accuracy']:.3f}, reward margin {f['reward_margin']:.3f}, KL {f['kl']:.4f} "
                f"nats/token; {summary['num_params']:,} params, {summary['wall_time']:.1f}s on mesh {summary['mesh']}")
    return (f"step {summary['step']}: valid loss {f['loss']:.4f} nats/token, "
            f"{f['bits_per_byte']:.4f} bits/byte, perplexity {f['perplexity']:.2f}, "
            f"accuracy {f['accuracy']:.3f}; {summary['num_params']:,} params, "
            f"{summary['tokens_seen']:,} tokens, {summary['wall_time']:.1f}s on mesh {summary['mesh']}")


# ----------------------------------------------------------------------------- loading

def load_run(workdir: str, *, step: int | None = None, mesh_cfg: dict | None = None):
    """(Run, train state) restored from a workdir, on a mesh: `mesh_cfg`, else the mesh the
    run was trained on (an FSDP-sized model stays sharded), else, when that does not fit the
    devices here, data-parallel over as many devices as the batch allows."""
    local, _ = remote.localize(workdir)
    path = os.path.join(local, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} an `lm train` workdir?")
    config = workdir_files.config_from_json(workdir_files.read_json(path))
    workdir_files.resolve_data_location(local, config)
    micro = config.train.batch_size // max(config.train.grad_accum, 1)
    mesh = None
    if mesh_cfg is None:
        try:
            mesh = sharding.make_mesh(config.mesh, batch_size=micro)
            sharding.check_divisible(model_config(config), config.train.batch_size,
                                     config.train.grad_accum, mesh)
        except ConfigError:
            mesh = None
            mesh_cfg = {"data": math.gcd(micro, jax.device_count()), "fsdp": 1, "tensor": 1}
    mesh = mesh or sharding.make_mesh(mesh_cfg)
    run = setup(config, local, mesh=mesh)
    ckpts = ckpt_lib.Checkpoints(workdir, read_only=True)
    try:
        state, _ = ckpts.restore(run.abstract_state, step)  # None: the newest good one
        run.restored_step = ckpts.restored_step
    finally:
        ckpts.close()
    return run, state


def load_workdir(workdir: str, step: int | None = None, *, for_eval: bool = False):
    """(config, model, params, dataset) of a trained workdir (newest checkpoint by default).
    for_eval: params as the eval step reads them (DPO: the policy with its reference)."""
    run, state = load_run(workdir, step=step)
    return run.config, run.model, eval_params(state) if for_eval else state["params"], run.dataset
