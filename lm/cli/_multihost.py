"""Flags every command shares for a multi-process run, and the one call that starts it.

Under SLURM (more than one task), Open MPI or a multi-host TPU slice the processes find each
other by themselves; elsewhere pass --coordinator_address, --num_processes and --process_id
(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) to every process. The CLI
dispatcher calls `start()` before any command touches a device, so `lm run`, `lm eval`,
`lm sample` ... under SLURM are one job, not N independent ones.
"""

from absl import flags

def define() -> None:
    """Define the flags (again, after lm.cli._errors.fresh_command_module dropped lm.cli flags
    for a second command in the same process)."""
    if "coordinator_address" in flags.FLAGS:
        return
    flags.DEFINE_string("coordinator_address", None,
                        "host:port of process 0, for a multi-process run.")
    flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
    flags.DEFINE_integer("process_id", None, "This process's index (0-based).")


def start() -> None:
    """jax.distributed.initialize when this is one process of several (lm.sharding)."""
    from lm import sharding

    f = flags.FLAGS
    sharding.maybe_initialize_distributed(f.coordinator_address, f.num_processes, f.process_id)
    sharding.enable_compilation_cache()
