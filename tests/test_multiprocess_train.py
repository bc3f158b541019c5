"""Training across 2 real processes x 2 CPU devices, started by `parallel/local_launch.py` on loopback.

One run goes through SIGTERM to every process (save, exit 0), a resume, a SIGKILL of one process (the survivor must
stop by itself, in bounded time) and a restart to the end. The logged losses, the final state and the saved data
positions must be those of one process on 4 devices fed the same global batches without interruption; checkpoints
of the run restore on 1 and on 8 devices, and train on.
"""

import json
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from tensorboardX.proto import event_pb2

from lumiere_jax.data import pipeline
from lumiere_jax.parallel import distributed, local_launch, mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import checkpoint, state as state_lib, step as step_lib
from micro import micro_config
from test_cli import MICRO

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKER = pathlib.Path(__file__).with_name('multiprocess_train_worker.py')
STEPS = 8
RUN_TIMEOUT_S = 240
SURVIVOR_BOUND_S = 90  # SIGKILL of one process -> the launcher has returned (the survivor stopped by itself)
CHECKPOINT_EVERY = 2
FLAGS = [*MICRO, f'--config.train.steps={STEPS}', f'--config.train.checkpoint_every={CHECKPOINT_EVERY}',
         '--config.train.log_every=1', '--heartbeat_timeout_s=15', '--shutdown_timeout_s=15']


def _launch(workdir, logs):
  """The launcher (2 processes x 2 devices) in its own process group; survivors of a failure get 120 s to stop."""
  env = dict(os.environ, PYTHONPATH=str(WORKER.parent), PYTHONUNBUFFERED='1',
             JAX_COMPILATION_CACHE_DIR=str(ROOT / '.cache' / 'jax'), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1')
  command = [sys.executable, '-m', 'lumiere_jax.parallel.local_launch', '--processes=2', '--devices_per_process=2',
             f'--log_dir={logs}', '--grace_s=120', '--', sys.executable, str(WORKER),
             '--config', 'configs/lumiere.py:stage=base,size=tiny', '--workdir', str(workdir), *FLAGS]
  return subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(launcher, logs, timeout=RUN_TIMEOUT_S):
  """{rc: exit status, stderr: the launcher's, log: process 0's}; kills the launcher and its processes on timeout."""
  try:
    _, stderr = launcher.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(launcher.pid, signal.SIGKILL)
    _, stderr = launcher.communicate()
    stderr += f'\n(test: timed out after {timeout} s)'
  return dict(rc=launcher.returncode, stderr=stderr, log=_log(logs, 0))


def _log(logs, i):
  path = pathlib.Path(logs) / f'process_{i}.log'
  return path.read_text(errors='replace') if path.exists() else ''


def _wait_for(condition, what, timeout=RUN_TIMEOUT_S):
  deadline = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < deadline, f'waited {timeout} s for {what}'
    time.sleep(0.2)


def _committed_steps(workdir):
  directory = checkpoint.checkpoint_dir(workdir)
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def _tensorboard_scalars(workdir, tag):
  """{step: value} of one scalar from the TFRecord event files process 0 wrote (the last run's value wins)."""
  values = {}
  for path in sorted((pathlib.Path(workdir) / 'tensorboard').glob('events.out.tfevents.*')):  # names: start times
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])  # skips the length's CRC
      offset += 16 + length
      values.update({event.step: v.simple_value for v in event.summary.value if v.tag == tag})
  return values


def _restore(workdir, step, config, devices, mesh_config):
  setup = state_lib.TrainSetup.create(config, mesh_lib.make_mesh(mesh_config, devices))
  checkpointer = checkpoint.Checkpointer(workdir, async_save=False)
  state = checkpointer.restore(step, setup.abstract_state())
  checkpointer.close()
  return setup, state


def _two_process_batches(config, count):
  """The first `count` global batches of a 2-process run (process 0's part, then process 1's) and the position of
  each process's iterator after them."""
  iterators = [pipeline.make_train_iterator(config, process_index=i, process_count=2) for i in range(2)]
  batches = []
  for _ in range(count):
    local = [next(iterator) for iterator in iterators]
    batches.append({key: np.concatenate([part[key] for part in local]) for key in local[0]})
  return batches, [iterator.get_state() for iterator in iterators]


def _saved_config(workdir, step):
  checkpointer = checkpoint.Checkpointer(workdir, async_save=False)
  config = checkpointer.restore_config(step)
  checkpointer.close()
  return config


def _sigterm_every_process(workdir, logs) -> int:
  """SIGTERM to the launcher (forwarded to both) once training runs: both save the same step and exit 0."""
  launcher = _launch(workdir, logs)
  _wait_for(lambda: 'loss=' in _log(logs, 0) or launcher.poll() is not None, 'the first step')
  launcher.send_signal(signal.SIGTERM)
  run = _finish(launcher, logs)
  assert run['rc'] == 0 and 'exit statuses [0, 0]' in run['stderr'], f'{run["stderr"][-2000:]}\n{run["log"][-3000:]}'
  assert 'on 4 cpu devices, 2 processes' in run['log'] and 'loss=' not in _log(logs, 1)  # process 0 alone reports
  saved = int(re.search(r'SIGTERM: saved step (\d+)', run['log']).group(1))
  committed = _committed_steps(workdir)
  assert committed and committed[-1] == saved < STEPS - CHECKPOINT_EVERY, (saved, committed)
  return saved


def _sigkill_one_process(workdir, logs, resumes_from: int) -> int:
  """Resume, SIGKILL process 1 after the next commit: process 0 stops by itself, in bounded time, saying why."""
  launcher = _launch(workdir, logs)
  _wait_for(lambda: _committed_steps(workdir)[-1] > resumes_from or launcher.poll() is not None, 'a new commit')
  pid = int(re.search(r'process 1 pid (\d+)', launcher.stderr.readline() + launcher.stderr.readline()).group(1))
  killed_at = time.monotonic()
  os.kill(pid, signal.SIGKILL)
  run = _finish(launcher, logs)
  seconds = time.monotonic() - killed_at
  assert f'resumed from step {resumes_from}' in run['log']
  assert run['rc'] != 0 and re.search(r'exit statuses \[\d+, 137\]', run['stderr']), run['stderr'][-2000:]
  assert seconds < SURVIVOR_BOUND_S, f'the survivor took {seconds:.0f} s to stop'
  lost_peer = r'another task died|Connection reset by peer|Connection closed by peer'
  assert re.search(lost_peer, run['log']), run['log'][-3000:]
  return _committed_steps(workdir)[-1]


def _one_process_on_four_devices(config) -> dict:
  """The same global batches without interruption: losses, final state, data positions, the batches."""
  setup = state_lib.TrainSetup.create(config, mesh_lib.make_mesh(config.mesh, jax.devices()[:4]))
  state, step, losses = setup.init(), step_lib.jit_train_step(setup), []
  batches, positions = _two_process_batches(config, STEPS)
  for batch in batches:
    state, metrics = step(state, sharding_lib.global_batch(batch, setup.mesh))
    losses.append(float(metrics['loss']))
  return dict(losses=losses, state=jax.device_get(state), positions=positions, batches=batches)


@pytest.mark.starts_first
def test_sigterm_sigkill_and_restart_across_two_processes_end_like_one_process_on_four_devices(tmp_path):
  # One test, not several sharing a fixture: pytest-xdist could run such a fixture once per worker.
  pipeline.read_keys(micro_config())  # builds the synthetic set once, before the processes race to
  workdir = tmp_path / 'run'
  saved = _sigterm_every_process(workdir, tmp_path / 'logs_term')
  committed = _sigkill_one_process(workdir, tmp_path / 'logs_kill', resumes_from=saved)
  restart = _finish(_launch(workdir, tmp_path / 'logs_restart'), tmp_path / 'logs_restart')
  assert restart['rc'] == 0, f'{restart["stderr"][-2000:]}\n{restart["log"][-3000:]}'
  assert f'resumed from step {committed}' in restart['log']
  config = _saved_config(workdir, STEPS)
  reference = _one_process_on_four_devices(config)

  # Losses of the three runs: a wrong batch would show. The killed run may lose its last summaries to the abort.
  logged = _tensorboard_scalars(workdir, 'loss')
  steps = sorted(logged)
  assert set(range(1, saved + 1)) | set(range(committed + 1, STEPS + 1)) <= set(steps) <= set(range(1, STEPS + 1))
  assert len(steps) >= STEPS - 1, steps
  np.testing.assert_allclose([logged[s] for s in steps], [reference['losses'][s - 1] for s in steps], rtol=2e-5)
  # The final state, restored on 1 device, and each process's data position after exactly STEPS batches.
  restored = jax.device_get(_restore(workdir, STEPS, config, jax.devices()[:1], dict(data=1, fsdp=1, tensor=1))[1])
  for part in ('params', 'ema'):
    for key, want in reference['state'][part].items():
      np.testing.assert_allclose(restored[part][key], want, rtol=1e-4, atol=1e-6, err_msg=f'{part} {key}')
  for i, position in enumerate(reference['positions']):
    saved_position = checkpoint.checkpoint_dir(workdir) / str(STEPS) / 'data' / f'process_{i}-of-2.json'
    assert json.loads(saved_position.read_text()) == position

  # An earlier step restored on 8 devices trains on: its next step's loss is the run's.
  step = STEPS - CHECKPOINT_EVERY
  setup, state = _restore(workdir, step, config, jax.devices()[:8], dict(data=1, fsdp=4, tensor=2))
  assert int(state['step']) == step
  assert any(set(x.sharding.spec) - {None} for x in jax.tree.leaves(state['params']))  # split over the new mesh
  before = jax.device_get(state['params'])
  batch = sharding_lib.global_batch(reference['batches'][step], setup.mesh)
  state, metrics = step_lib.jit_train_step(setup)(state, batch)
  assert float(metrics['loss']) == pytest.approx(reference['losses'][step], rel=2e-5)
  after = jax.device_get(state['params'])
  assert int(state['step']) == step + 1 and all(not np.array_equal(before[k], after[k]) for k in before)


def test_the_launcher_stops_the_others_when_one_process_fails(tmp_path):
  # Process 1 fails at once; process 0 would sleep for a minute unless the launcher kills it after the grace period.
  code = 'import sys, time; sys.exit(3) if "--process_id=1" in sys.argv else time.sleep(60)'
  start = time.monotonic()
  command = [sys.executable, '-c', code]
  status = local_launch.main(['--processes=2', f'--log_dir={tmp_path}', '--grace_s=1', '--', *command])
  assert status == 3 and time.monotonic() - start < 30


@pytest.mark.parametrize('argv, match', [
    (['--num_processes=2'], 'needs --coordinator_address, --process_id'),
    (['--coordinator_address=127.0.0.1:1', '--num_processes=2', '--process_id=2'], r'--process_id=2 must be in')])
def test_explicit_distributed_flags_are_checked_before_joining(argv, match):
  with flagsaver.flagsaver():
    flags.FLAGS(['lumiere-train', '--distributed=explicit', *argv])
    with pytest.raises(ValueError, match=match):
      distributed.initialize_from_flags()
