"""The input pipeline across 2 real processes (jax.distributed on this machine, 2 CPU devices each)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from lumiere_jax.data import pipeline
from lumiere_jax.train import checkpoint
from micro import micro_config

WORKER = pathlib.Path(__file__).with_name('two_process_data_worker.py')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_cover_the_dataset_and_assemble_global_batches(tmp_path):
  config = micro_config('base', tmp_path / 'data', **{'train.batch_size': 4})
  everything = pipeline.read_keys(config)  # also builds the synthetic set before the workers start
  port, outs = _free_port(), [tmp_path / f'process_{i}.json' for i in range(2)]
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=2',
             PYTHONPATH=os.pathsep.join([str(WORKER.parent), os.environ.get('PYTHONPATH', '')]))
  workers = [subprocess.Popen([sys.executable, str(WORKER), str(port), str(i), str(tmp_path / 'data'), str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, out in enumerate(outs)]
  try:
    logs = [worker.communicate(timeout=240)[0] for worker in workers]
  except subprocess.TimeoutExpired:
    for worker in workers:
      worker.kill()
    pytest.fail('the two data processes did not finish within 240 s')
  assert all(worker.returncode == 0 for worker in workers), logs
  seen = [json.loads(out.read_text()) for out in outs]
  keys = [set(s['keys']) for s in seen]
  assert not keys[0] & keys[1] and keys[0] | keys[1] == set(everything) and len(everything) == 16
  for s in seen:
    assert s['local_shape'][0] == 2 and s['global_shape'][0] == 4 and s['resumed_equal']
  # The global batch is process 0's local batch followed by process 1's.
  assert seen[0]['halves'] == seen[1]['halves'] == pytest.approx([seen[0]['local_sum'], seen[1]['local_sum']])


def test_a_data_position_from_another_process_count_is_refused(tmp_path):
  config = micro_config('base', tmp_path / 'data')
  iterator = pipeline.make_train_iterator(config)
  next(iterator)
  checkpointer = checkpoint.Checkpointer(tmp_path / 'run', async_save=False)
  state = {'x': jnp.zeros(2)}
  checkpointer.save(1, state, iterator, config)
  data = tmp_path / 'run' / 'checkpoints' / '1' / 'data'
  checkpointer.restore(1, jax.eval_shape(lambda: state), pipeline.make_train_iterator(config))  # same count: fine
  (data / 'process_0-of-1.json').rename(data / 'process_0-of-2.json')  # as if written by 2 processes
  with pytest.raises(ValueError, match=r'data position of \[2\] processes, this job has 1'):
    checkpointer.restore(1, jax.eval_shape(lambda: state), pipeline.make_train_iterator(config))
  checkpointer.close()
