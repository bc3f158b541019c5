"""The input pipeline and its checkpoint across 2 real processes (jax.distributed here, 2 CPU devices each)."""

import functools
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lumiere_jax.data import pipeline
from lumiere_jax.train import checkpoint
from micro import micro_config

WORKER = pathlib.Path(__file__).with_name('two_process_data_worker.py')
TIMEOUT_S = 120


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory):
  """Runs the 2 worker processes once: (their JSON reports, the config, the workdir they checkpointed into)."""
  tmp = tmp_path_factory.mktemp('two_processes')
  config = micro_config('base', tmp / 'data', **{'train.batch_size': 4})
  pipeline.read_keys(config)  # builds the synthetic set before the workers start
  port, outs = _free_port(), [tmp / f'process_{i}.json' for i in range(2)]
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=2')
  logs = [tmp / f'process_{i}.log' for i in range(2)]
  workers = []
  for i, (out, log) in enumerate(zip(outs, logs)):
    with log.open('w') as stream:
      workers.append(subprocess.Popen([sys.executable, str(WORKER), str(port), str(i), str(tmp / 'data'),
                                       str(tmp / 'run'), str(out)], env=env, stdout=stream, stderr=subprocess.STDOUT))
  deadline = time.monotonic() + TIMEOUT_S
  try:
    for worker in workers:
      worker.wait(timeout=max(deadline - time.monotonic(), 0.1))
  except subprocess.TimeoutExpired:
    for worker in workers:
      worker.kill()
      worker.wait()
  output = '\n'.join(f'--- process {i}:\n{log.read_text()[-3000:]}' for i, log in enumerate(logs))
  assert all(worker.returncode == 0 for worker in workers), f'killed after {TIMEOUT_S} s or failed:\n{output}'
  return [json.loads(out.read_text()) for out in outs], config, tmp / 'run'


def test_two_processes_cover_the_dataset_assemble_global_batches_and_resume(two_processes):
  seen, config, _ = two_processes
  keys = [set(s['keys']) for s in seen]
  assert [len(s['keys']) for s in seen] == [len(k) for k in keys] == [8, 8]  # no key read twice
  assert not keys[0] & keys[1] and keys[0] | keys[1] == set(pipeline.read_keys(config))
  for s in seen:
    assert s['devices'] == 4 and s['local_shape'][0] == 2 and s['global_shape'][0] == 4
    assert s['resumed_equal'] and s['state_equal']
  # Every global batch is process 0's local batch followed by process 1's.
  for i, halves in enumerate(seen[0]['global_halves']):
    assert halves == seen[1]['global_halves'][i] == pytest.approx([s['local_sums'][i] for s in seen])
  assert len({tuple(s['local_sums']) for s in seen}) == 2  # the processes read different clips


def test_a_data_position_from_two_processes_is_refused_in_one(two_processes):
  _, config, workdir = two_processes
  step = 2
  data = checkpoint.checkpoint_dir(workdir) / str(step) / 'data'
  assert sorted(path.name for path in data.glob('process_*')) == ['process_0-of-2.json', 'process_1-of-2.json']
  checkpointer = checkpoint.Checkpointer(workdir, async_save=False)
  with pytest.raises(ValueError, match=r'saved by 2 processes, this job has 1.*same number of processes'):
    checkpointer.restore(step, {}, pipeline.make_train_iterator(config))
  checkpointer.close()


def test_a_data_position_from_two_processes_resumes_in_one_at_the_same_point_of_the_epoch(two_processes):
  # data.resume_on_other_process_count: 2 processes x 2 clips x 2 steps read half of their 8-clip slices, so one
  # process goes on at clip 8 of its 16-clip epoch: the third batch of 4 of a fresh single-process iterator.
  _, config, workdir = two_processes
  step = 2
  saved = [json.loads(path.read_text())
           for path in sorted((checkpoint.checkpoint_dir(workdir) / str(step) / 'data').glob('process_*'))]
  assert [state['parent']['next_index'] for state in saved] == [4, 4]
  fresh = pipeline.make_train_iterator(config)
  batches = [next(fresh) for _ in range(3)]
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=device) for k, v in batches[0].items()}
  resumed = pipeline.make_train_iterator(config)
  checkpointer = checkpoint.Checkpointer(workdir, async_save=False)
  state = checkpointer.restore(step, abstract, resumed,
                               functools.partial(pipeline.position_for_process_count, config, process_count=1))
  checkpointer.close()
  assert state['video'].shape == batches[0]['video'].shape
  assert resumed.get_state()['parent']['next_index'] == 8
  assert all(np.array_equal(value, batches[2][key]) for key, value in next(resumed).items())
