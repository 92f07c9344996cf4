"""The trainer: the jitted train step and the loop that feeds it.

    train(config, workdir, hooks=)   train (or resume) and return a summary dict
    make_train_step(run)             jit(state, batch) -> (state, metrics) over the run's mesh
    summary_line(summary)            the line `lm train` prints at the end

A run is built (or restored) by lm.runs; the objective (lm/objectives) says what the step sums
and what it logs. Steps are `jax.jit` with in/out shardings from the logical-axis rules
(lm.sharding) and a donated state: the modern form of pjit. Inside the loop Python only feeds
batches (built one ahead on a thread and put on the devices early); losses come back to the host
every log_every steps, not every step.

The workdir holds config.json (the resolved config), metrics.jsonl (one JSON per logged step),
summary.json, TensorBoard events under tb/, the tokenizer and checkpoints/ (Orbax). Rerunning
the same command resumes from the newest checkpoint, cutting metrics.jsonl back to that step so
every step appears exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lm import baselines, devices, models, objectives, remote, sampling, sharding, trackers
from lm import checkpoint as ckpt_lib
from lm import guard as guard_lib
from lm import workdir as workdir_files
from lm.evals import hook as evals_hook
from lm.evaluation import make_eval_step, run_eval
from lm.files import atomic_write
from lm.hf import pretrained
from lm.objectives.base import Context
from lm.runs import Run, eval_params, init_state, setup

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the step

def make_train_step(run: Run):
    """jit(state, batch) -> (state, metrics): one optimizer step over the global batch.

    With grad_accum A the batch is cut into A micro-batches (row i goes to micro-batch
    i % A, so each device keeps its own rows) and the gradients are summed in a scan. Losses
    are normalised by the weight of the whole batch, so A only changes memory, not the math.
    """
    t, mcfg, objective = run.config.train, run.model_cfg, run.objective
    ctx = Context(run.model, t, bool(run.config.data.document_masking))
    accum, deterministic = int(t.grad_accum), mcfg.dropout == 0.0
    micro_sharding = jax.sharding.NamedSharding(
        run.mesh, jax.sharding.PartitionSpec(None, ("data", "fsdp")))

    def loss_fn(params, batch, rng, total_weight, ref_params=None):
        sums, mutated = objective.train_sums(ctx, params, ref_params, batch, deterministic=deterministic,
                                             rng=None if deterministic else rng)
        aux = mcfg.moe_aux_weight * models.aux_loss(mutated) / accum  # aux_loss is unweighted
        return objective.loss_sum(sums, t) / total_weight + aux, (sums, aux)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulate(params, ref_params, batch, rng, total_weight):
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
        zero_sums = {k: jnp.zeros((), jnp.float32) for k in objective.sum_names}
        (grads, sums, aux), _ = jax.lax.scan(
            body, (zeros, zero_sums, jnp.zeros((), jnp.float32)),
            (jax.tree.map(split, batch), jnp.arange(accum)))
        return grads, sums, aux

    def step_fn(state, batch):
        params, ref_params = state["params"], state.get("ref_params")
        rng = jax.random.fold_in(state["rng"], state["step"])
        total_weight = jnp.maximum(objective.batch_weight(batch), 1.0)
        if accum == 1:
            (_, (sums, aux)), grads = grad_fn(params, batch, rng, total_weight, ref_params)
        else:
            grads, sums, aux = accumulate(params, ref_params, batch, rng, total_weight)
        updates, opt_state = run.tx.update(grads, state["opt_state"], params)
        new_state = {**state, "step": state["step"] + 1,
                     "params": optax.apply_updates(params, updates), "opt_state": opt_state}
        metrics = objective.train_metrics(sums, total_weight, t)
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


# ----------------------------------------------------------------------------- what the loop calls

class Reporter:
    """Every sink of a logged record: metrics.jsonl (+ W&B / MLflow through lm.trackers),
    TensorBoard, the progress bar and the in-memory history. Only the main process writes."""

    def __init__(self, run: Run, workdir: str, start: int, *, main: bool, progress: bool):
        t = run.config.train
        self.main, self.headline = main, run.objective.headline
        self.log = workdir_files.MetricsLog(
            os.path.join(workdir, "metrics.jsonl"), start, enabled=main,
            trackers=trackers.start(run.config, workdir, start) if main else ())
        self.history = list(self.log.history) if main else []
        self.writer = workdir_files.summary_writer(os.path.join(workdir, "tb"), start) if main else None
        self.bar = None
        if progress and main and start < t.steps:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=t.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def write(self, record: dict, final: dict | None) -> None:
        self.history.append(record)
        self.log.write(record)
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k.replace("eval_", "eval/"), v, record["step"])
            self.writer.flush()
        if self.bar is not None:
            post = {"loss": f"{record['loss']:.3f}"}
            if record["tokens_per_sec"]:
                post["tok/s"] = f"{record['tokens_per_sec']:.0f}"
            if final is not None:
                post[f"valid_{self.headline}"] = f"{final[self.headline]:.3f}"
            self.bar.set_postfix(post, refresh=False)

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log.close()
        if self.writer is not None:
            self.writer.close()


class Hooks:
    """What is optional in the loop: fn(step, state) after every `every`-th step (its
    checkpoint, if any, already saved). Tests inject faults here."""

    def __init__(self):
        self._hooks = []

    def add_hook(self, fn, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"add_hook: every={every} must be >= 1")
        self._hooks.append((fn, int(every)))

    def __call__(self, step: int, state: dict) -> None:
        for fn, every in self._hooks:
            if step % every == 0:
                fn(step, state)


def make_evaluate(run: Run):
    """state -> the final metrics on valid: the objective's eval plus the task evals
    (config.evals.tasks, flat `task/<task>/<metric>` keys). The one eval of the loop."""
    t = run.config.train
    eval_step = make_eval_step(run.model, run.config, run.dataset.tokenizer.token_bytes, run.mesh,
                               eval_params(run.state_shardings))
    task_eval = evals_hook.maybe(run)

    def evaluate(state) -> dict:
        final = run_eval(eval_step, eval_params(state), run.dataset, run.config, run.mesh,
                         "valid", t.eval_batches)
        final.update(task_eval(state["params"]) if task_eval else {})
        return final
    return evaluate


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
    new = sampling.generate(run.model, params, ids, max_new_tokens=max_new,
                            temperature=temperature, seed=seed, eos_id=tok.eos_id)
    return prompt + tok.decode(np.asarray(new, np.int32))


# ----------------------------------------------------------------------------- the loop

def train(config, workdir: str, *, progress: bool = True, hooks: Hooks | None = None) -> dict:
    """Train (resuming from workdir's newest checkpoint if any) and return a summary dict:
    step, final (valid eval metrics), history, num_params, flops_per_token, tokens_seen,
    wall_time, compile_time, mesh, devices, sample, baselines, entropy_rate."""
    t_start = time.time()
    workdir, mirror = remote.localize(workdir)  # a gs:// workdir: small files mirrored here
    run = setup(config, workdir)  # every check of the input, before the workdir is touched
    main = jax.process_index() == 0
    if main:
        trackers.validate(run.config)  # a bad train.trackers fails before checkpoints or metrics
    os.makedirs(workdir, exist_ok=True)
    train_step, evaluate = make_train_step(run), make_evaluate(run)  # evaluate checks evals.*
    # The guard: workdir lock, SIGTERM/SIGINT -> checkpoint at the next step, NaN/Inf stop.
    with guard_lib.Guard(workdir, lock=main) as guard:
        ckpts = ckpt_lib.Checkpoints(mirror.url if mirror else workdir, keep=run.config.train.keep_checkpoints)
        try:
            state, train_it, start = _start(run, ckpts, guard, main)
            if main:  # after a restore that matched (a refused one keeps the old config.json),
                # before the first save (each save keeps a copy of it)
                atomic_write(os.path.join(workdir, "config.json"),
                             json.dumps(run.config.to_dict(), indent=2, default=str) + "\n")
                workdir_files.write_data_location(workdir, run.config.data)
            reporter = Reporter(run, workdir, start, main=main, progress=progress)
            try:
                state, final, compile_time = _loop(
                    run, (train_step, evaluate, hooks or Hooks()), state, train_it, start,
                    (ckpts, guard, mirror, reporter), t_start)
            finally:
                reporter.close()
        finally:
            ckpts.close()  # else Orbax's threads die noisily at exit
    summary = _summary(run, workdir, state, final, reporter.history, t_start, compile_time)
    if main:
        atomic_write(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2, default=str) + "\n")
    if mirror:
        mirror.push()
    return summary


def _start(run: Run, ckpts, guard, main: bool):
    """(state, train iterator, first step): the newest good checkpoint, else a fresh state
    (random, or the pretrained params of init_from)."""
    train_it = run.dataset.train_iterator(
        run.config.train.batch_size, seed=run.config.seed, **sharding.feed_slice(run.mesh))
    if ckpts.latest_step() is None and not ckpt_lib.step_dirs(ckpts.directory):
        return init_state(run, pretrained.initial_params(run)), train_it, 0
    state, data_state = ckpts.restore(run.abstract_state, config=run.config.to_dict())  # newest good
    ckpts.quarantine(ckpts.bad_steps if main else [])
    train_it.restore(data_state)
    start = int(jax.device_get(state["step"]))
    guard.saved(start)
    return state, train_it, start


def _loop(run: Run, steps, state, train_it, start, sinks, t_start):
    """Steps start..train.steps: log, evaluate, checkpoint, hooks. Returns (state, final
    metrics, compile time)."""
    t = run.config.train
    (train_step, evaluate, hooks), (ckpts, guard, mirror, reporter) = steps, sinks
    tokens_per_step = t.batch_size * run.seq_len
    feed = _Prefetch(train_it, run.mesh) if start < t.steps else None
    compile_time, last_time, last_step, final = None, None, start, None
    try:
        with sharding.activate(run.mesh):
            for step in range(start, t.steps):
                batch, data_state = feed.next()
                state, metrics = devices.settle(run.mesh, train_step(state, batch))  # the one place a step is dispatched
                done = step + 1
                if last_time is None:  # the first step compiles: time from its end
                    jax.block_until_ready(metrics["loss"])
                    compile_time = time.time() - t_start
                    last_time, last_step = time.time(), done
                evaluated = t.eval_every and done % t.eval_every == 0 or done == t.steps
                if done % t.log_every == 0 or evaluated:
                    record = {"step": done, **{k: float(v) for k, v in jax.device_get(metrics).items()}}
                    record["tokens_per_sec"] = ((done - last_step) * tokens_per_step / (time.time() - last_time)
                                                if done > last_step else None)
                    evaluation = evaluate(state) if evaluated else None
                    record.update({f"eval_{k}": v for k, v in (evaluation or {}).items()})
                    reporter.write(record, evaluation)
                    final = evaluation or final
                    guard.check_metrics(record)
                    last_time, last_step = time.time(), done
                reporter.tick()
                stop = guard.should_stop(done, sync=done % t.log_every == 0)
                if (t.checkpoint_every and done % t.checkpoint_every == 0) or done == t.steps or stop:
                    _save(ckpts, guard, mirror, done, state, data_state)
                if stop:
                    raise guard.stopped(done)
                hooks(done, state)
    finally:
        if feed is not None:
            feed.close()
    if final is None:  # resumed at the end: evaluate the restored state
        final = evaluate(state)
    return state, final, compile_time


def _save(ckpts, guard, mirror, step: int, state, data_state) -> None:
    guard.check_state(state, step)  # a diverged state is never saved
    ckpts.save(step, state, data_state)
    guard.saved(step)
    if mirror:
        mirror.push()


# ----------------------------------------------------------------------------- the end of a run

def _summary(run: Run, workdir, state, final, history, t_start, compile_time) -> dict:
    t = run.config.train
    main = jax.process_index() == 0
    return {
        "step": int(jax.device_get(state["step"])),
        "objective": t.objective,
        "final": final,
        "history": history,
        "num_params": int(sum(x.size for x in jax.tree.leaves(run.abstract_state["params"]))),
        "flops_per_token": float(models.flops_per_token(run.model_cfg)),
        "tokens_seen": int(t.steps * t.batch_size * run.seq_len),
        "wall_time": time.time() - t_start,
        "compile_time": compile_time,
        "mesh": sharding.describe(run.mesh),
        "devices": [str(d) for d in run.mesh.devices.flat],
        "process_count": jax.process_count(),
        "sample": _sample(run, state) if t.sample_tokens and jax.process_count() == 1 else "",
        "baselines": baselines.for_run(run.config, workdir, dataset=run.dataset) if main else None,
        "entropy_rate": _float_or_none(getattr(run.dataset, "entropy_rate", None)),
    }


def _sample(run: Run, state) -> str:
    """The end-of-run sample; a failure is a warning: it never loses a finished run."""
    t = run.config.train
    try:
        return sample_text(run, state["params"], prompt=t.sample_prompt,
                           max_new_tokens=t.sample_tokens, seed=run.config.seed)
    except Exception as err:  # noqa: BLE001 -- the run is trained and saved; the sample is a nicety
        log.warning("no end-of-run sample (train.sample_prompt=%r): %s: %s",
                    t.sample_prompt, type(err).__name__, err)
        return ""


def _float_or_none(x):
    return None if x is None else float(x)


def summary_line(summary: dict) -> str:
    """The line `lm train` prints: the objective's own figures (lm/objectives), then the run's."""
    figures = objectives.get(summary["objective"]).figures(summary["final"])
    return (f"step {summary['step']}: {figures}; {summary['num_params']:,} params, "
            f"{summary['tokens_seen']:,} tokens, {summary['wall_time']:.1f}s on mesh {summary['mesh']}")
