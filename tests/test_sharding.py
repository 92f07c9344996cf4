"""Mesh construction, divisibility errors, FSDP memory split, sharded == single-device."""

import importlib.util
import os

import jax
import numpy as np
import pytest

from lm import runs, sharding, trainer
from lm.config import ConfigError, model_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
    spec = importlib.util.spec_from_file_location("quickstart", os.path.join(ROOT, "experiments/quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny")
    for key, value in overrides.items():
        section, name = key.split("__")
        config[section][name] = value
    return config


def test_mesh_shapes_and_errors():
    assert jax.device_count() == 8
    mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
    assert sharding.describe(mesh) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 3
    # explicit sizes smaller than the device count use the first devices
    small = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 1})
    assert list(small.devices.flat) == jax.devices()[:2]
    with pytest.raises(ConfigError, match="do not divide the 8"):
        sharding.make_mesh({"data": -1, "fsdp": 3, "tensor": 1})
    with pytest.raises(ConfigError, match="needs 16 devices"):
        sharding.make_mesh({"data": 4, "fsdp": 4, "tensor": 1})
    with pytest.raises(ConfigError, match="only one axis may be -1"):
        sharding.make_mesh({"data": -1, "fsdp": -1, "tensor": 1})


def test_cpu_batch_axis_shrinks_to_divide_the_batch():
    # CPU host devices are an artefact of lm/__init__.py: a -1 batch axis takes as many as the
    # batch splits over; explicit sizes are never changed.
    fill = {"data": -1, "fsdp": 1, "tensor": 1}
    assert sharding.describe(sharding.make_mesh(fill, batch_size=6))["data"] == 6
    assert sharding.describe(sharding.make_mesh(fill, batch_size=16))["data"] == 8
    assert sharding.describe(sharding.make_mesh(fill, batch_size=7))["data"] == 7
    mesh = sharding.make_mesh({"data": 2, "fsdp": -1, "tensor": 1}, batch_size=6)
    assert sharding.describe(mesh) == {"data": 2, "fsdp": 3, "tensor": 1}
    assert sharding.describe(sharding.make_mesh({"data": 8, "fsdp": 1, "tensor": 1},
                                                batch_size=6))["data"] == 8


def test_divisibility_errors_name_the_problem():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    cfg = model_config(tiny_config(model__num_heads=2))
    sharding.check_divisible(cfg, 8, 1, mesh)
    with pytest.raises(ConfigError, match=r"batch_size=6 .* data\*fsdp=4"):
        sharding.check_divisible(cfg, 6, 1, mesh)
    with pytest.raises(ConfigError, match="micro-batch 2"):
        sharding.check_divisible(cfg, 8, 4, mesh)
    odd = model_config(tiny_config(model__num_heads=1))
    with pytest.raises(ConfigError, match="num_heads=1 is not divisible by mesh.tensor=2"):
        sharding.check_divisible(odd, 8, 1, mesh)
    # setup refuses before compiling anything
    with pytest.raises(ConfigError, match="num_heads"):
        runs.setup(tiny_config(model__num_heads=1, mesh__data=2, mesh__fsdp=2, mesh__tensor=2))


def _losses(config, batches):
    run = runs.setup(config)
    state = runs.init_state(run)
    step = trainer.make_train_step(run)
    losses = []
    with sharding.activate(run.mesh):
        for local in batches:
            state, metrics = step(state, sharding.global_batch(local, run.mesh))
            losses.append(float(metrics["loss"]))
    return run, state, losses


def test_sharded_training_matches_one_device_and_fsdp_splits_state():
    base = tiny_config()
    it = runs.setup(base, mesh=sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1})).dataset \
        .train_iterator(8, seed=0)
    batches = [next(it) for _ in range(3)]
    one = tiny_config(mesh__data=1, mesh__fsdp=1, mesh__tensor=1)
    # (2, 2, 2) with gradient accumulation: neither the mesh nor micro-batching changes the math
    mesh = tiny_config(mesh__data=2, mesh__fsdp=2, mesh__tensor=2, train__grad_accum=2)
    run1, state1, losses1 = _losses(one, batches)
    run8, state8, losses8 = _losses(mesh, batches)
    assert len(run1.mesh.devices.flat) == 1 and sharding.describe(run8.mesh) == {
        "data": 2, "fsdp": 2, "tensor": 2}
    np.testing.assert_allclose(losses8, losses1, rtol=2e-6)
    assert losses1[-1] < losses1[0]
    for a, b in zip(jax.tree.leaves(state1["params"]), jax.tree.leaves(state8["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)

    # On an fsdp=8 mesh every parameter with an `embed` axis is split 8 ways, and Adam's
    # moments with it: per-device bytes ~ total / fsdp.
    fsdp_mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
    run = runs.setup(tiny_config(mesh__data=1, mesh__fsdp=8, mesh__tensor=1), mesh=fsdp_mesh)
    params = jax.device_put(state8["params"], run.param_shardings)
    opt = jax.device_put(state8["opt_state"], run.state_shardings["opt_state"])
    total = sum(x.nbytes for x in jax.tree.leaves(params))
    specs = jax.tree.leaves(run.param_specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    unsplit = sum(x.nbytes for x, s in zip(jax.tree.leaves(params), specs) if "embed" not in tuple(s))
    per_device = sharding.per_device_bytes(params)
    assert per_device == pytest.approx((total - unsplit) / 8 + unsplit, rel=1e-6)
    assert per_device < 0.2 * total
    assert sharding.per_device_bytes(opt) < 2 * per_device * 1.01 + 64


SLURM_NODE = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_PROCID": "11", "SLURM_LOCALID": "3",
              "SLURM_NODEID": "1", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}


def test_slurm_one_task_per_gpu_drives_its_own_gpu():
    plan = sharding.launch_plan(dict(SLURM_NODE, SLURM_NTASKS_PER_NODE="8", SLURM_TASKS_PER_NODE="8(x2)"))
    assert plan == {"launcher": "slurm", "num_processes": 16, "process_id": 11, "local_rank": 3,
                    "local_size": 8, "local_device_ids": [3]}


def test_slurm_one_task_per_node_drives_all_eight_gpus():
    # jax's own SLURM detection would take [SLURM_LOCALID] = [0]: 7 GPUs idle.
    env = dict(SLURM_NODE, SLURM_NTASKS="2", SLURM_PROCID="1", SLURM_LOCALID="0",
               SLURM_TASKS_PER_NODE="1(x2)")
    plan = sharding.launch_plan(env)
    assert plan["num_processes"] == 2 and plan["local_device_ids"] == list(range(8))
    # GPUs known from SLURM when CUDA_VISIBLE_DEVICES is not set
    env = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
    assert sharding.launch_plan(dict(env, SLURM_GPUS_ON_NODE="4"))["local_device_ids"] == [0, 1, 2, 3]


def test_open_mpi_ranks_and_gpu_binding():
    env = {"OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
    plan = sharding.launch_plan(env)
    assert (plan["launcher"], plan["num_processes"], plan["process_id"]) == ("openmpi", 8, 5)
    assert plan["local_device_ids"] == [2, 3]  # 4 ranks share 8 GPUs: two each
    assert sharding.launch_plan(dict(env, CUDA_VISIBLE_DEVICES="5"))["local_device_ids"] == [0]
    with pytest.raises(ConfigError, match="3 processes on this node cannot share 8"):
        sharding.launch_plan(dict(env, OMPI_COMM_WORLD_LOCAL_SIZE="3"))
    assert sharding.launch_plan({"OMPI_COMM_WORLD_SIZE": "1"}) is None
    assert sharding.launch_plan({}) is None


def test_a_mesh_smaller_than_the_accelerators_is_an_error_unless_asked_for(caplog):
    from ml_collections import ConfigDict
    cfg = ConfigDict({"data": 1, "fsdp": 1, "tensor": 1})
    with pytest.raises(ConfigError, match="uses 1 of 8 gpu devices.*allow_subset"):
        sharding.check_subset({"data": 1}, 1, 8, "gpu", cfg)
    sharding.check_subset({"data": 1}, 1, 8, "gpu", ConfigDict(dict(cfg, allow_subset=True)))
    sharding.check_subset({"data": 1}, 1, 8, "cpu", cfg)  # host devices: a split of one CPU
    import logging
    with caplog.at_level(logging.INFO, logger="lm.sharding"):
        mesh = sharding.make_mesh(cfg)
    line = [r.message for r in caplog.records if r.message.startswith("process 0/1")]
    assert line and "mesh {'data': 1, 'fsdp': 1, 'tensor': 1} over 1 devices" in line[0]
