"""Survivor exit time: one of two local processes SIGKILLed while the other compiles the train step, or during steps.

    .venv/bin/python benchmarks/survivor_exit.py [--trials 1] [--moments compile,steps] [--heartbeat_timeout_s 15]
        [--shutdown_timeout_s 15] [--grace_s 120]

Each trial starts the 2-process x 2-device run of `tests/test_multiprocess_train.py` (its worker, the micro flags and
the tests' XLA flags) on a fresh, empty compile cache, waits for a moment in process 0's log, SIGKILLs process 1 and
times how long the launcher takes to return. Moments: `compile`, process 0 has just started compiling the train step
(on a cold cache that takes a while, so the peer dies under a compile); `steps`, process 0 has logged its first loss.
With `--grace_s` longer than the heartbeat timeout the time is the survivor's own: how long it takes to notice the dead
peer and stop (issue 16 item 4). Also reported: the launcher's exit statuses, process 0's line naming the cause, and
its last compile-cache write after the kill (when it finished compiling; none: it was stopped mid-compile). Not part
of `make test` (about a minute per trial).
"""

import argparse
import importlib
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

TESTS = pathlib.Path(__file__).resolve().parent.parent / 'tests'
sys.path.insert(0, str(TESTS))

importlib.import_module('conftest')  # the tests' environment (XLA flags, data directory), inherited by the processes
from micro import micro_config  # noqa: E402
from test_cli import MICRO  # noqa: E402
from test_multiprocess_train import ROOT, WORKER, _log  # noqa: E402

from lumiere_jax.data import pipeline  # noqa: E402

MOMENTS = {'compile': 'compiling the train step', 'steps': 'loss='}
CAUSE = re.compile(r'Terminating process|another task died|Connection (reset|closed) by peer|Barrier failed')
LOG_PREFIX = re.compile(r'^[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ')  # 'F1202 11:30:18.842028 29994 client.h:80] '
STEPS = 200  # more than a trial runs: the kill comes first
WAIT_S = 600


def _launch(root: pathlib.Path, args) -> subprocess.Popen:
  """The launcher in its own process group, on an empty compile cache; its stderr goes to root/launcher.log."""
  cache = root / 'compile_cache'
  cache.mkdir(parents=True)
  env = dict(os.environ, PYTHONPATH=f'{TESTS}{os.pathsep}{ROOT}', PYTHONUNBUFFERED='1',
             JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1')
  train_flags = [*MICRO, f'--config.train.steps={STEPS}', f'--config.train.checkpoint_every={STEPS}',
                 '--config.train.log_every=1', f'--heartbeat_timeout_s={args.heartbeat_timeout_s}',
                 f'--shutdown_timeout_s={args.shutdown_timeout_s}']
  command = [sys.executable, '-m', 'lumiere_jax.parallel.local_launch', '--processes=2', '--devices_per_process=2',
             f'--log_dir={root / "logs"}', f'--grace_s={args.grace_s}', '--', sys.executable, str(WORKER),
             '--config', 'configs/lumiere.py:stage=base,size=tiny', '--workdir', str(root / 'run'), *train_flags]
  with open(root / 'launcher.log', 'w') as stderr:
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=stderr, start_new_session=True)


def _cause(log: str) -> str:
  """The first sentence of the survivor's first line naming why it stopped (else its last line)."""
  lines = [LOG_PREFIX.sub('', line.strip()) for line in log.splitlines() if line.strip()]
  named = [line.split('. ')[0] for line in lines if CAUSE.search(line)]
  heartbeat = ' (a heartbeat timeout)' if re.search(r'stopped sending heartbeats|heartbeat timeout', log) else ''
  return (named[0] if named else lines[-1] if lines else '(no output)')[:110] + heartbeat


def _last_cache_write_after(cache: pathlib.Path, wall_time: float) -> float | None:
  """Seconds from `wall_time` to the newest compile-cache entry written after it (None: none was). Process 0 writes
  an executable there as soon as it is compiled, so for a kill at the start of the train step's compile this is when
  the survivor finished compiling (it logs nothing until the barrier after it)."""
  later = [path.stat().st_mtime - wall_time for path in cache.glob('*-cache') if path.stat().st_mtime > wall_time]
  return max(later) if later else None


def trial(root: pathlib.Path, moment: str, args) -> dict:
  """{'seconds' (SIGKILL -> launcher returned), 'cache_write_s', 'statuses', 'cause'}, or {'error'}."""
  launcher, logs = _launch(root, args), root / 'logs'
  deadline = time.monotonic() + WAIT_S
  while MOMENTS[moment] not in _log(logs, 0):
    if launcher.poll() is not None or time.monotonic() > deadline:
      os.killpg(launcher.pid, signal.SIGKILL)
      launcher.wait()
      return dict(error=f'no {MOMENTS[moment]!r} in process 0\'s log: {_cause(_log(logs, 0))}')
    time.sleep(0.1)
  os.kill(int(re.search(r'process 1 pid (\d+)', (root / 'launcher.log').read_text()).group(1)), signal.SIGKILL)
  killed_at, killed_at_wall = time.monotonic(), time.time()
  try:
    launcher.wait(timeout=args.grace_s + WAIT_S)
  except subprocess.TimeoutExpired:
    os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait()
  seconds = time.monotonic() - killed_at
  statuses = re.search(r'exit statuses (\[.*\])', (root / 'launcher.log').read_text())
  return dict(seconds=seconds, cache_write_s=_last_cache_write_after(root / 'compile_cache', killed_at_wall),
              statuses=statuses.group(1) if statuses else '(launcher killed)', cause=_cause(_log(logs, 0)))


def _describe(result: dict) -> str:
  if 'error' in result:
    return f'FAILED: {result["error"]}'
  written = ('none' if result['cache_write_s'] is None else f'{result["cache_write_s"]:.1f} s after the kill')
  return (f'launcher returned {result["seconds"]:.1f} s after the SIGKILL; exit statuses {result["statuses"]}; '
          f'last compile-cache write {written}; process 0: {result["cause"]!r}')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--trials', type=int, default=1, help='trials per moment')
  parser.add_argument('--moments', default='compile,steps', help=f'comma-separated, of {sorted(MOMENTS)}')
  parser.add_argument('--heartbeat_timeout_s', type=int, default=15)
  parser.add_argument('--shutdown_timeout_s', type=int, default=15)
  parser.add_argument('--grace_s', type=float, default=120, help="the launcher's grace for the survivor")
  parser.add_argument('--workdir', default=None, help='where the runs go (default: a temporary directory)')
  args = parser.parse_args(argv)
  moments = args.moments.split(',')
  unknown = sorted(set(moments) - set(MOMENTS))
  if unknown:
    parser.error(f'--moments: unknown {unknown}; known: {sorted(MOMENTS)}')
  root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='survivor_exit_'))
  pipeline.read_keys(micro_config())  # the synthetic set, built once before two processes race to
  print(f'flags: --heartbeat_timeout_s={args.heartbeat_timeout_s} --shutdown_timeout_s={args.shutdown_timeout_s} '
        f'--grace_s={args.grace_s:g}; runs in {root}', flush=True)
  seconds = {moment: [] for moment in moments}
  for i in range(args.trials):
    for moment in moments:
      result = trial(root / f'{moment}_{i:02d}', moment, args)
      print(f'kill during {moment}, trial {i + 1}/{args.trials}: {_describe(result)}', flush=True)
      if 'error' not in result:
        seconds[moment].append(result['seconds'])
  for moment, values in seconds.items():
    figures = ', '.join(f'{s:.1f}' for s in values) or 'n/a'
    median = f'median {statistics.median(values):.1f} s' if values else 'no trial finished'
    print(f'kill during {moment}: {median} ({figures} s) from the SIGKILL to the launcher returning')
  return 0 if all(len(values) == args.trials for values in seconds.values()) else 1


if __name__ == '__main__':
  sys.exit(main())
