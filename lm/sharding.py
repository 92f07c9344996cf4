"""Device mesh, the logical-axis rules, shardings of state and batches, multi-host start.

The model names the axes of every parameter and main activation logically (batch, embed,
heads, ...); `RULES` below is the one place that maps those names onto the mesh axes

    data    plain data parallelism: the batch is split, parameters are replicated;
    fsdp    fully sharded data parallelism: the batch is split AND parameters / optimizer
            state are split along their `embed` axis (gathered by XLA when used);
    tensor  tensor (model) parallelism: heads, MLP width and vocabulary are split (Megatron).

Meshes use `AxisType.Auto` axes: shardings are given at the jit boundary (in/out shardings)
and by `with_logical_constraint` inside the model, and XLA's partitioner does the rest.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from lm.config import ConfigError

AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes, in priority order: a mesh axis is used at most once per array,
# so in an activation [batch, length, embed] `batch` takes fsdp first and `embed` stays
# whole, while in a weight [embed, mlp] `embed` gets fsdp.
RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("kv", None),
    ("layers", None),
    ("expert", None),
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- mesh

def mesh_shape(mesh_cfg, num_devices: int) -> dict[str, int]:
    """Axis sizes from the config: one size may be -1 and takes the remaining devices."""
    sizes = {a: int(mesh_cfg[a]) for a in AXES}
    free = [a for a, s in sizes.items() if s == -1]
    bad = [a for a, s in sizes.items() if s == 0 or s < -1]
    if bad:
        raise ConfigError(f"mesh.{bad[0]}={sizes[bad[0]]}: axis sizes must be positive or -1")
    if len(free) > 1:
        raise ConfigError(f"mesh: only one axis may be -1, got {free} ({sizes})")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if num_devices % fixed:
            raise ConfigError(
                f"mesh {sizes}: the fixed axes ({fixed} devices) do not divide the "
                f"{num_devices} available devices")
        sizes[free[0]] = num_devices // fixed
    elif fixed > num_devices:
        raise ConfigError(f"mesh {sizes} needs {fixed} devices but only {num_devices} exist")
    return sizes


def make_mesh(mesh_cfg, devices=None, *, batch_size: int | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axes over `devices` (default: all devices).

    When every size is explicit and their product is smaller than the device count, the
    first devices are used (single process only: in a multi-process run every process must
    own part of the mesh). On CPU host devices (lm/__init__.py splits a CPU into one device
    per core), a -1 batch axis shrinks to a size that divides `batch_size`, so a batch that
    does not split over the cores still runs, on fewer of them.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(mesh_cfg, len(devices))
    free = [a for a in ("data", "fsdp") if int(mesh_cfg[a]) == -1]
    if batch_size and free and devices[0].platform == "cpu" and jax.process_count() == 1:
        other = batch_axis_size_of(sizes) // sizes[free[0]]
        while sizes[free[0]] > 1 and batch_size % (other * sizes[free[0]]):
            sizes[free[0]] -= 1
    n = math.prod(sizes.values())
    if n < len(devices):
        check_subset(sizes, n, len(devices), devices[0].platform, mesh_cfg)
        devices = devices[:n]
    shape = tuple(sizes[a] for a in AXES)
    types = (AxisType.Auto,) * len(AXES)
    try:  # make_mesh orders devices for the physical topology (TPU/GPU interconnect)
        mesh = jax.make_mesh(shape, AXES, axis_types=types, devices=devices)
    except Exception:  # e.g. a device subset that is not a topology-shaped slice
        mesh = Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=types)
    log_start(mesh)
    return mesh


def check_subset(sizes, used: int, available: int, platform: str, mesh_cfg) -> None:
    """A mesh smaller than the devices is an error on accelerators (idle GPUs are a launch
    mistake: e.g. one process per node that sees one GPU) unless mesh.allow_subset is set;
    always an error across processes (each must own part of the mesh). CPU host devices are
    a split of one CPU: a subset is fine there."""
    if jax.process_count() > 1:
        raise ConfigError(
            f"mesh {sizes} uses {used} of {available} devices; a multi-process run must "
            "use them all (set one axis to -1)")
    allowed = bool(mesh_cfg.get("allow_subset", False)) if hasattr(mesh_cfg, "get") else False
    if platform != "cpu" and not allowed:
        raise ConfigError(
            f"mesh {sizes} uses {used} of {available} {platform} devices; set one axis to -1 "
            "to use them all, or --config.mesh.allow_subset=true to leave the rest idle")


def log_start(mesh: Mesh) -> str:
    """One line every process logs at start: who it is, what it sees, the mesh it runs."""
    line = (f"process {jax.process_index()}/{jax.process_count()}: "
            f"{jax.local_device_count()} local / {jax.device_count()} global "
            f"{mesh.devices.flat[0].platform} devices, mesh {describe(mesh)} "
            f"over {mesh.devices.size} devices")
    log.info(line)
    return line


def describe(mesh: Mesh) -> dict[str, int]:
    return {name: int(size) for name, size in mesh.shape.items()}


@contextlib.contextmanager
def activate(mesh: Mesh):
    """Enter the mesh and the logical rules; jit traces inside this see both."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        yield


# ----------------------------------------------------------------------------- checks

def batch_axis_size(mesh: Mesh) -> int:
    return batch_axis_size_of(mesh.shape)


def batch_axis_size_of(sizes) -> int:
    """How many ways the batch is split: the product of the data and fsdp axes."""
    return sizes["data"] * sizes["fsdp"]


def check_divisible(model_cfg, batch_size: int, grad_accum: int, mesh: Mesh) -> None:
    """Clear errors, before anything compiles, for sizes that cannot split over the mesh."""
    nb, nt = batch_axis_size(mesh), mesh.shape["tensor"]
    if grad_accum < 1:
        raise ConfigError(f"train.grad_accum={grad_accum}: must be >= 1")
    if batch_size % grad_accum:
        raise ConfigError(
            f"train.batch_size={batch_size} is not divisible by train.grad_accum={grad_accum}")
    micro = batch_size // grad_accum
    if micro % nb:
        raise ConfigError(
            f"train.batch_size={batch_size} (micro-batch {micro} with grad_accum={grad_accum}) "
            f"is not divisible by the batch-parallel mesh size data*fsdp={nb} (mesh {describe(mesh)})")
    if model_cfg.num_heads % nt:
        raise ConfigError(
            f"model.num_heads={model_cfg.num_heads} is not divisible by mesh.tensor={nt}")


# ----------------------------------------------------------------------------- shardings

def _spec_fits(shape, spec: P, mesh: Mesh) -> P:
    """Drop mesh axes from dimensions they do not divide (those dims stay replicated)."""
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = math.prod(mesh.shape[a] for a in names)
        out.append(axes if size == 1 or dim % size == 0 else None)
    return P(*out)


# Logical axes whose size is a data fact, not a design choice (an odd character vocabulary,
# a single kv head): replicated, with a warning, when their mesh axis does not divide them.
# Every other sharded dimension must divide its mesh axes.
MAY_REPLICATE = ("vocab", "kv_heads")


def logical_shardings(boxed_tree, mesh: Mesh):
    """NamedShardings for a tree of (abstract) boxed values from `nn.with_logical_partitioning`.

    Unboxed leaves are replicated. A dimension its mesh axes do not divide is a ConfigError
    naming the parameter, except for MAY_REPLICATE axes, which are replicated with a warning.
    """
    specs = nn.get_partition_spec(boxed_tree)
    mesh_specs = nn.logical_to_mesh(specs, RULES)
    values = nn.unbox(boxed_tree)
    is_spec = lambda x: isinstance(x, P) or x is None  # noqa: E731

    def one(path, value, spec, logical):
        spec = spec if isinstance(spec, P) else P()
        fitted = _spec_fits(value.shape, spec, mesh)
        if fitted != spec:
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            logical = tuple(logical) if isinstance(logical, P) else ()
            for i, (want, got) in enumerate(zip(spec, fitted)):
                if want == got:
                    continue
                axis = logical[i] if i < len(logical) else None
                sizes = {a: mesh.shape[a] for a in ((want,) if isinstance(want, str) else want)}
                text = (f"parameter {name} {list(value.shape)}: dimension {i} ({axis}, size "
                        f"{value.shape[i]}) does not divide over mesh {sizes}")
                if axis not in MAY_REPLICATE:
                    raise ConfigError(text + f"; change the model size or mesh.{next(iter(sizes))}")
                log.warning("%s; it is replicated instead", text)
        return NamedSharding(mesh, fitted)

    return jax.tree_util.tree_map_with_path(one, values, mesh_specs, specs, is_leaf=is_spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def like_params(tree, params_struct, param_shardings, mesh: Mesh):
    """Shardings for a tree (e.g. optimizer state) that holds copies of the params tree.

    Every subtree shaped like the params (Adam's mu and nu) is sharded like the params;
    every other leaf (step counts, scalars) is replicated.
    """
    params_def = jax.tree.structure(params_struct)

    def is_param_like(x):
        try:
            return jax.tree.structure(x) == params_def
        except Exception:
            return False

    def one(x):
        if is_param_like(x):
            return param_shardings
        return jax.tree.map(lambda _: replicated(mesh), x)

    return jax.tree.map(one, tree, is_leaf=is_param_like)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """[B, T] arrays: rows split over data and fsdp, the length kept whole."""
    return NamedSharding(mesh, P(("data", "fsdp")))


def process_rows(mesh: Mesh) -> tuple[int, int]:
    """(index, count): this process feeds slice `index` of `count` equal row slices of the
    global batch, the rows its devices hold. count is the process count when the batch axes
    span every process, smaller when they do not (tensor parallelism across hosts: processes
    sharing a batch slice read the same rows)."""
    nb = batch_axis_size(mesh)
    held = batch_sharding(mesh).addressable_devices_indices_map((nb,))
    starts = sorted({s[0].start or 0 for s in held.values()})
    m = len(starts)
    if starts != list(range(starts[0], starts[0] + m)) or nb % m or starts[0] % m:
        raise ConfigError(f"mesh {describe(mesh)}: this process's devices hold batch rows "
                          f"{starts} of {nb}, not one contiguous slice; reorder the mesh axes")
    return starts[0] // m, nb // m


def feed_slice(mesh: Mesh) -> dict:
    """process_index / process_count keywords for the data iterators (`process_rows`)."""
    index, count = process_rows(mesh)
    return {"process_index": index, "process_count": count}


def global_batch(local: dict, mesh: Mesh) -> dict:
    """Assemble the global batch from this process's rows (its slice, `process_rows`)."""
    sharding = batch_sharding(mesh)
    n = process_rows(mesh)[1]
    return {k: jax.make_array_from_process_local_data(
        sharding, v, (v.shape[0] * n,) + v.shape[1:]) for k, v in local.items()}


def per_device_bytes(tree) -> int:
    """Bytes of the tree that live on the first device (to check that FSDP really splits)."""
    dev = jax.devices()[0]
    total = 0
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            if shard.device == dev:
                total += shard.data.nbytes
    return total


# ----------------------------------------------------------------------------- multi-host

def _launched_on_several() -> bool:
    """A cluster launcher started this as one of several processes (jax detects the rest)."""
    env = os.environ
    if launch_plan(env) is not None:
        return True
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    return len(hosts) > 1 or bool(env.get("MEGASCALE_COORDINATOR_ADDRESS"))


def _int(env, *names) -> int | None:
    for name in names:
        value = (env.get(name) or "").split("(")[0]  # SLURM writes "8(x2)" for 8 on each of 2
        if value.strip().isdigit():
            return int(value)
    return None


def launch_plan(env) -> dict | None:
    """What SLURM or Open MPI says about this process, and the GPUs it should drive.

    None unless a launcher started more than one process. local_device_ids: the visible GPUs
    this process takes: all of them with one process per node, its own one with one process
    per GPU, an even share otherwise; None when the visible GPUs are unknown (jax decides).
    jax's own detection takes [local rank] whatever the layout, so one process per node
    would drive one GPU of eight.
    """
    if (_int(env, "SLURM_NTASKS") or 1) > 1:
        launcher, n, rank = "slurm", _int(env, "SLURM_NTASKS"), _int(env, "SLURM_PROCID") or 0
        local_rank = _int(env, "SLURM_LOCALID") or 0
        local_size = _int(env, "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE") or 1
    elif (_int(env, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
        launcher, n, rank = "openmpi", _int(env, "OMPI_COMM_WORLD_SIZE"), _int(env, "OMPI_COMM_WORLD_RANK") or 0
        local_rank = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK") or 0
        local_size = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE") or 1
    else:
        return None
    visible = env.get("CUDA_VISIBLE_DEVICES")
    gpus = len([d for d in visible.split(",") if d.strip()]) if visible else _int(env, "SLURM_GPUS_ON_NODE")
    ids = None
    if gpus == 1:  # the launcher bound one GPU to this process
        ids = [0]
    elif gpus:
        if gpus % local_size:
            raise ConfigError(
                f"{launcher}: {local_size} processes on this node cannot share {gpus} visible GPUs "
                "evenly; launch one process per node or one per GPU")
        share = gpus // local_size
        ids = list(range(local_rank * share, (local_rank + 1) * share)) if share < gpus else list(range(gpus))
    return {"launcher": launcher, "num_processes": n, "process_id": rank,
            "local_rank": local_rank, "local_size": local_size, "local_device_ids": ids}


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
    """Start `jax.distributed` when this is one process of several; returns whether it did.

    Explicit arguments win; else the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID environment; else a cluster launcher (SLURM with more than one task,
    Open MPI, a multi-host TPU slice), which `jax.distributed.initialize()` detects itself.
    Must run before anything touches a device; every `lm` command calls it (lm/cli).
    """
    if jax.distributed.is_initialized():
        return True
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ValueError("a coordinator address needs num_processes and process_id too")
        if num_processes <= 1:
            return False
        if "cpu" in (env.get("JAX_PLATFORMS") or "cpu"):
            # Cross-process collectives on CPU go through gloo (the default on most builds).
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        return True
    if _launched_on_several():
        plan = launch_plan(env)
        ids = plan and plan["local_device_ids"]
        jax.distributed.initialize(local_device_ids=ids) if ids else jax.distributed.initialize()
        return True
    return False


def enable_compilation_cache(directory: str | None = None) -> str | None:
    """A persistent XLA compilation cache in `directory` (or $LM_COMPILATION_CACHE_DIR; JAX's
    own JAX_COMPILATION_CACHE_DIR works too): restarts and reruns skip compiling. Local
    paths and gs:// URLs."""
    directory = directory or os.environ.get("LM_COMPILATION_CACHE_DIR") or None
    if directory:
        jax.config.update("jax_compilation_cache_dir", directory)
    return directory
