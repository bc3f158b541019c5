"""Multi-process start-up: `jax.distributed.initialize` before any other JAX call.

Explicit flags (`--coordinator_address`, `--num_processes`, `--process_id`) serve local multi-process runs; on TPU
VMs, SLURM and GKE, `--distributed=auto` lets JAX discover the cluster from its environment.
"""

from absl import flags
import jax

_DISTRIBUTED = flags.DEFINE_enum('distributed', 'off', ['off', 'auto', 'explicit'],
                                 'off: one process; auto: discover the cluster (TPU VM, SLURM, GKE); explicit: flags.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (explicit mode).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes (explicit mode).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index (explicit mode).')


def initialize_from_flags() -> None:
  if _DISTRIBUTED.value == 'auto':
    jax.distributed.initialize()
  elif _DISTRIBUTED.value == 'explicit':
    missing = [f.name for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID) if f.value is None]
    if missing:
      raise ValueError(f'--distributed=explicit needs --{", --".join(missing)}')
    jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
