"""Starts N processes of one command on this machine, M CPU devices each, joined through a loopback coordinator.

    python -m lumiere_jax.parallel.local_launch --processes 2 --devices_per_process 2 [--log_dir DIR] -- \
        python -m lumiere_jax.cli.train --config configs/lumiere.py:stage=base,size=tiny --workdir runs/two

Each process runs COMMAND with `--distributed=explicit --coordinator_address=127.0.0.1:PORT --num_processes=N
--process_id=i` appended (the flags of `parallel/distributed.py`) and JAX_PLATFORMS=cpu with M host devices. SIGTERM
and SIGINT are forwarded to every process (a preemption drill: they save and exit 0). The launcher returns when all
have exited; when one fails, the others get `--grace_s` to stop on their own (the distributed runtime's heartbeat
timeout stops them with an error naming the cause) and are then killed. Exit status: 0 when every process exited 0,
else the first failure's code (128 + signal number for a process killed by a signal).

With a persistent compile cache (JAX_COMPILATION_CACHE_DIR) only process 0 finds its entries on CPU (JAX keys them by
each process's view of the topology), so the others recompile while it waits at the first collective, and gloo gives
up after 30 s: see `tests/multiprocess_train_worker.py` for the tests' workaround, or leave the cache off.
"""

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

_POLL_S = 0.2


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def process_env(devices_per_process: int, base: dict | None = None) -> dict:
  """`base` (default: this environment) on the CPU platform with `devices_per_process` devices."""
  env = dict(os.environ if base is None else base, JAX_PLATFORMS='cpu')
  xla_flags = [f for f in env.get('XLA_FLAGS', '').split() if not f.startswith('--xla_force_host_platform_device')]
  env['XLA_FLAGS'] = ' '.join([*xla_flags, f'--xla_force_host_platform_device_count={devices_per_process}'])
  return env


def process_command(command: list[str], port: int, num_processes: int, process_id: int) -> list[str]:
  return [*command, '--distributed=explicit', f'--coordinator_address=127.0.0.1:{port}',
          f'--num_processes={num_processes}', f'--process_id={process_id}']


def _exit_code(returncode: int) -> int:
  return 128 - returncode if returncode < 0 else returncode


def launch(command: list[str], num_processes: int, devices_per_process: int, *, port: int = 0,
           log_dir: str | None = None, grace_s: float = 30.0) -> int:
  """Runs the processes to the end (see the module docstring); returns the launcher's exit status."""
  port = port or free_port()
  env = process_env(devices_per_process)
  if log_dir:
    pathlib.Path(log_dir).mkdir(parents=True, exist_ok=True)
  processes = []
  for i in range(num_processes):
    output = open(pathlib.Path(log_dir) / f'process_{i}.log', 'w') if log_dir else None
    processes.append(subprocess.Popen(process_command(command, port, num_processes, i), env=env, stdout=output,
                                      stderr=subprocess.STDOUT if output else None))
    if output:
      output.close()  # the child holds its own copy
    print(f'local_launch: process {i} pid {processes[-1].pid}', file=sys.stderr, flush=True)

  def forward(signum, frame):
    del frame
    print(f'local_launch: forwarding {signal.Signals(signum).name} to every process', file=sys.stderr, flush=True)
    for process in processes:
      if process.poll() is None:
        process.send_signal(signal.SIGTERM)

  previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
  failure, kill_at = None, None
  try:
    while any(process.poll() is None for process in processes):
      for i, process in enumerate(processes):
        if failure is None and process.poll() not in (None, 0):
          failure, kill_at = _exit_code(process.returncode), time.monotonic() + grace_s
          print(f'local_launch: process {i} failed with exit status {failure}; the others get {grace_s:.0f} s to '
                'stop before they are killed', file=sys.stderr, flush=True)
      if kill_at is not None and time.monotonic() > kill_at:
        for process in processes:
          if process.poll() is None:
            process.kill()
      time.sleep(_POLL_S)
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  codes = [_exit_code(process.returncode) for process in processes]
  print(f'local_launch: exit statuses {codes}', file=sys.stderr, flush=True)
  return failure if failure is not None else max(codes)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--processes', type=int, default=2)
  parser.add_argument('--devices_per_process', type=int, default=1)
  parser.add_argument('--port', type=int, default=0, help='coordinator port on 127.0.0.1 (0: a free one)')
  parser.add_argument('--log_dir', default=None, help='write process_<i>.log here (default: inherit the terminal)')
  parser.add_argument('--grace_s', type=float, default=30.0,
                      help='after a process fails, how long the others may run before they are killed')
  parser.add_argument('command', nargs=argparse.REMAINDER, help='-- COMMAND [ARGS...]')
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ['--'] else args.command
  if not command:
    parser.error('no command: pass it after --')
  if args.processes < 1 or args.devices_per_process < 1:
    parser.error('--processes and --devices_per_process must be >= 1')
  return launch(command, args.processes, args.devices_per_process, port=args.port, log_dir=args.log_dir,
                grace_s=args.grace_s)


if __name__ == '__main__':
  sys.exit(main())
