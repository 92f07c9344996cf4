"""Per-device memory of the real train step from a deviceless TPU compile: no accelerator needed.

    python -m bench.compiled_memory [--models=124m,350m,1b] [--topology=v5p:1x1x1]
        [--out=bench/results/compiled_memory.jsonl]

The trainer's jitted step (lm.trainer.make_train_step) for bench.gpu's shapes (context 2048,
bf16, attention_impl=auto -> splash) is compiled by XLA for a TPU topology that exists only as
a description (jax.experimental.topologies; needs the libtpu wheel, no TPU), and XLA's
memory_analysis gives, per device: arguments (params + optimizer state + batch), outputs
(aliased with the donated arguments), temporaries (activations saved for the backward pass,
logits, gradients). The peak is arguments + outputs - aliased + temporaries. A TPU and a GPU
compiler lay out buffers differently, so read it as an estimate of what one 80 GB GPU needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

GIB = 2**30


def topology_devices(topology: str = "v5p:1x1x1"):
    """The devices of a TPU topology described, not attached (libtpu's compiler only)."""
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")  # single-host description
    from jax.experimental import topologies
    bounds = tuple(int(x) for x in topology.split(":")[1].split("x"))  # all chips on one host
    return list(topologies.get_topology_desc(topology, "tpu", chips_per_host_bounds=bounds).devices)


@contextlib.contextmanager
def as_platform(platform: str):
    """dtype='auto' and attention_impl='auto' resolve as on `platform` (they ask the backend)."""
    import jax
    saved = jax.default_backend
    jax.default_backend = lambda: platform
    try:
        yield
    finally:
        jax.default_backend = saved


def retarget(run, devices):
    """The same Run over `devices` (same mesh shape and axes): setup builds it on CPU devices,
    since it creates a concrete PRNG key under the mesh, which described devices cannot hold."""
    import dataclasses
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    cpu = run.mesh
    mesh = Mesh(np.asarray(devices).reshape(cpu.devices.shape), cpu.axis_names,
                axis_types=cpu.axis_types)
    move = lambda s: NamedSharding(mesh, s.spec)  # noqa: E731
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=move(x.sharding)),
                            run.abstract_state)
    shardings = jax.tree.map(move, run.state_shardings)
    return dataclasses.replace(run, mesh=mesh, abstract_state=abstract, state_shardings=shardings)


def step_memory(config, devices, platform: str = "tpu") -> dict:
    """Compile the train step of `config` over `devices` and return XLA's per-device bytes."""
    import jax
    import jax.numpy as jnp
    from lm import runs, sharding, trainer
    with as_platform(platform):
        run = runs.setup(config, mesh=sharding.make_mesh(config.mesh, jax.devices("cpu")[:len(devices)]))
        run = retarget(run, devices)
        step = trainer.make_train_step(run)
        b, t = int(config.train.batch_size), int(run.seq_len)
        bs = sharding.batch_sharding(run.mesh)
        batch = {k: jax.ShapeDtypeStruct((b, t), jnp.float32 if k == "weights" else jnp.int32,
                                         sharding=bs)
                 for k in ("inputs", "targets", "weights", "segment_ids")}
        t0 = time.perf_counter()
        with sharding.activate(run.mesh):
            compiled = step.trace(run.abstract_state, batch).lower().compile()
        seconds = time.perf_counter() - t0
    ma = compiled.memory_analysis()
    out = {k: int(getattr(ma, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    out["compile_s"] = round(seconds, 1)
    return out


def table(lines: list[dict]) -> str:
    """Markdown: one row per model, the newest 'before' and 'after' peaks side by side."""
    latest = {(r["model"], r["label"]): r for r in lines}
    out = ["| model | batch x context | remat | peak before GiB | peak after GiB | temp before | temp after |",
           "|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in lines):
        b, a = latest.get((model, "before"), {}), latest.get((model, "after"), {})
        any_ = a or b
        out.append(f"| {model} | {any_['batch_size']} x {any_['context']} | {any_['remat']} | "
                   f"{b.get('peak_gib', '')} | {a.get('peak_gib', '')} | {b.get('temp_gib', '')} | "
                   f"{a.get('temp_gib', '')} |")
    return "\n".join(out) + "\n"


def main(argv) -> int:
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="124m,350m,1b")
    p.add_argument("--topology", default="v5p:1x1x1")
    p.add_argument("--label", default="", help="stored with each line (e.g. before / after)")
    p.add_argument("--out", default="bench/results/compiled_memory.jsonl")
    args = p.parse_args(argv)
    from bench import gpu
    try:
        devices = topology_devices(args.topology)
    except Exception as e:  # no libtpu wheel: nothing to compile with
        print(f"compiled_memory: no TPU compiler ({type(e).__name__}: {str(e)[:200]}); "
              "install the libtpu wheel (pip install libtpu) and rerun", file=sys.stderr)
        return 2
    for name in args.models.split(","):
        config = gpu.gpt_config(name)
        mem = step_memory(config, devices)
        shape = gpu.PLANS[name]
        rec = {"model": name, "topology": args.topology, "label": args.label,
               "batch_size": shape["batch_size"], "context": gpu.CONTEXT, "remat": shape["remat"],
               **{f"{k}_gib": round(v / GIB, 2) for k, v in mem.items() if k != "compile_s"},
               "compile_s": mem["compile_s"]}
        print(json.dumps(rec), flush=True)
        if args.out:
            os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(rec) + "\n")
    if args.out:  # the before / after table beside the lines
        with open(args.out) as f:
            text = table([json.loads(line) for line in f if line.strip()])
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
