"""Multi-process start-up: `jax.distributed.initialize` before any other JAX call.

`--distributed=auto` lets JAX discover the cluster from its environment (TPU VMs, SLURM, Open MPI, TPU on GKE);
`--distributed=explicit` takes `--coordinator_address`, `--num_processes` and `--process_id` (local runs, what
`parallel/local_launch.py` passes). The timeouts bound how long a lost process can go unnoticed: the coordination
service declares a process dead after `--heartbeat_timeout_s` without a heartbeat and then terminates the others
with an error naming the cause, and a process that ends waits at most `--shutdown_timeout_s` for the rest.

`barrier` lines the processes up through the coordination service before their first collective: gloo (the CPU
collectives) waits a fixed 30 s for its peers to connect, which processes that finish compiling further apart (a
cold compile cache, a loaded machine) overrun; the barrier waits up to `--collective_start_timeout_s` instead.
"""

from absl import flags
import jax
from jax._src import distributed as jax_distributed  # the coordination client: a barrier that is no collective

_DISTRIBUTED = flags.DEFINE_enum('distributed', 'off', ['off', 'auto', 'explicit'],
                                 'off: one process; auto: discover the cluster (TPU VM, SLURM, GKE); explicit: flags.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (explicit mode).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes (explicit mode).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index (explicit mode).')
_INIT_TIMEOUT = flags.DEFINE_integer('initialization_timeout_s', 300, 'How long to wait for every process to join.',
                                     lower_bound=1)
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    'heartbeat_timeout_s', 60, 'A process silent this long is declared dead and the job stops with an error.',
    lower_bound=1)
_SHUTDOWN_TIMEOUT = flags.DEFINE_integer(
    'shutdown_timeout_s', 60, 'How long a finishing process waits for the others at the shutdown barrier.',
    lower_bound=1)
_COLLECTIVE_START_TIMEOUT = flags.DEFINE_integer(
    'collective_start_timeout_s', 900,
    'How long a process that finished compiling waits for the others before the first collective (gloo itself '
    'waits only 30 s).', lower_bound=1)


def initialize_from_flags() -> None:
  """Joins the job the flags describe (nothing with `--distributed=off`)."""
  if _DISTRIBUTED.value == 'off':
    return
  timeouts = dict(initialization_timeout=_INIT_TIMEOUT.value, heartbeat_timeout_seconds=_HEARTBEAT_TIMEOUT.value,
                  shutdown_timeout_seconds=_SHUTDOWN_TIMEOUT.value)
  if _DISTRIBUTED.value == 'auto':
    jax.distributed.initialize(**timeouts)
    return
  missing = [f.name for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID) if f.value is None]
  if missing:
    raise ValueError(f'--distributed=explicit needs --{", --".join(missing)}')
  if not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
    raise ValueError(f'--process_id={_PROCESS_ID.value} must be in [0, --num_processes={_NUM_PROCESSES.value})')
  jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                             **timeouts)


def barrier(name: str) -> None:
  """Waits until every process reached `name` (at most `--collective_start_timeout_s`; nothing with one process).

  Goes through the coordination service, so a lost process ends the wait with an error after
  `--heartbeat_timeout_s` instead of hanging in a collective.
  """
  if jax.process_count() == 1:
    return
  timeout_s = _COLLECTIVE_START_TIMEOUT.value if flags.FLAGS.is_parsed() else _COLLECTIVE_START_TIMEOUT.default
  jax_distributed.global_state.client.wait_at_barrier(name, timeout_in_ms=timeout_s * 1000)
