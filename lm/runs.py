"""Building a run and restoring one: the config checked, mesh, dataset, model, optimizer and
shardings, a fresh train state, or the state saved in a workdir.

    setup(config, workdir, mesh=) -> Run       every check of the input, before the workdir is touched
    init_state(run, params=None)  -> state     fresh (or from given params), born sharded
    load_run(workdir, step=)      -> (Run, state) of a trained workdir
    load_workdir(workdir, step=)  -> (config, model, params, dataset)

The train state is a plain dict {step, params, opt_state, rng}; an objective that keeps a frozen
reference (lm/objectives: keeps_reference) adds ref_params, which is saved with the state.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn

from lm import checkpoint as ckpt_lib
from lm import models, objectives, optim, remote, sharding
from lm import workdir as workdir_files
from lm.config import ConfigError, ModelConfig, model_config
from lm.data.dataset import build_dataset
from lm.hf import pretrained
from lm.precision import resolve_dtype


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

    @property
    def objective(self):
        """The record of config train.objective (lm/objectives)."""
        return objectives.get(self.config.train.objective)


def _validate(config) -> ModelConfig:
    mcfg = model_config(config)
    objective = objectives.get(config.train.objective)
    if objective.model_kind != mcfg.kind:
        raise ConfigError(f"train.objective={objective.name!r} needs model.kind="
                          f"{objective.model_kind!r}, got {mcfg.kind!r}")
    t = config.train
    for key in ("steps", "batch_size", "log_every"):
        if t[key] <= 0:
            raise ConfigError(f"train.{key}={t[key]}: must be positive")
    for key in ("eval_every", "eval_batches", "checkpoint_every", "warmup_steps", "sample_tokens"):
        if t[key] < 0:
            raise ConfigError(f"train.{key}={t[key]}: must be >= 0")
    if objective.reads_pairs != (config.data.source == "preference"):
        pair_objectives = sorted(o.name for o in objectives.OBJECTIVES.values() if o.reads_pairs)
        raise ConfigError(f"train.objective in {pair_objectives} and data.source=preference go together "
                          f"(got objective={objective.name!r}, source={config.data.source!r})")
    objective.check(config, mcfg)
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


def _init_fn(model, mcfg: ModelConfig, objective, rows: int):
    """rng -> boxed params (with logical axis names)."""
    def init(rng):
        args = objective.init_args(_dummy_batch(rows, mcfg.max_len))
        return model.init({"params": rng, "dropout": rng}, *args)["params"]
    return init


def setup(config, workdir: str | None = None, *, mesh=None) -> Run:
    """Validate the config, build mesh, dataset, model, optimizer and all shardings.

    Every check that can fail on bad input runs before the workdir is touched. Returns a
    Run whose config has model.vocab_size filled in from the tokenizer.
    """
    config = copy.deepcopy(config)
    if config.init_from:  # the pretrained model's architecture and tokenizer
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
    objective = objectives.get(t.objective)

    rows = sharding.batch_axis_size(mesh)
    with sharding.activate(mesh):
        boxed = jax.eval_shape(_init_fn(model, mcfg, objective, rows), jax.random.PRNGKey(0))
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
    if objective.keeps_reference:  # the frozen reference travels (and is saved) with the state
        state_shardings["ref_params"], abstract["ref_params"] = param_shardings, params_struct
    abstract = ckpt_lib.abstract_like(abstract, state_shardings)
    return Run(config, mcfg, model, dataset, mesh, tx, optim.learning_rate_schedule(t),
               param_specs, state_shardings, abstract)


def init_state(run: Run, params=None) -> dict:
    """Fresh train state, created directly in its sharded layout; `params` (already placed in
    run.param_shardings, e.g. a pretrained model) replace the random initialisation."""
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(run.config.seed))
    init = _init_fn(run.model, run.model_cfg, run.objective, sharding.batch_axis_size(run.mesh))

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
    if run.objective.keeps_reference:
        state["ref_params"] = reference_copy(run, params)
    return state


def reference_copy(run: Run, params):
    """A frozen copy of the starting params (new buffers: the train step donates the policy's)."""
    with sharding.activate(run.mesh):
        return jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=run.param_shardings)(params)


def eval_params(state: dict):
    """What the eval step reads: the params, or the policy with its frozen reference."""
    if "ref_params" in state:
        return {"policy": state["params"], "ref": state["ref_params"]}
    return state["params"]


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
    for_eval: params as the eval step reads them (with the frozen reference, if any)."""
    run, state = load_run(workdir, step=step)
    return run.config, run.model, eval_params(state) if for_eval else state["params"], run.dataset
