"""Preemption and failing storage: SIGTERM in any phase, SIGKILL at any point, a failing save, an unwritable workdir.

Every interrupted run, once rerun, must end bit-identical (every state array and the data position) to a run that
was never interrupted. The in-process tests place SIGTERM exactly (a step, a set-up phase, the final save); the
subprocess trial sends SIGKILL and then SIGTERM to a training process at random times (`benchmarks/fault_soak.py`
repeats such trials many times).
"""

import errno
import json
import logging
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import orbax.checkpoint as ocp
import pytest

from lumiere_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import checkpoint, main as train_main, state as state_lib
from micro import micro_config
from test_train import _tree_equal

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 6
CHECKPOINT_EVERY = 2


def _config(**overrides):
  return micro_config(**{'train.steps': STEPS + 1, 'train.checkpoint_every': CHECKPOINT_EVERY, **overrides})


def _train(config, workdir, **kwargs):
  """Up to step STEPS of STEPS + 1: the final samples (a compile of their own) are not what these tests are about."""
  return train_main.train(config, workdir, devices=jax.devices()[:1], until_step=STEPS, **kwargs)


def _sigterm_self():
  os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """The uninterrupted in-process run: final state, data position and wall seconds."""
  start = time.monotonic()
  result = _train(_config(), tmp_path_factory.mktemp('reference'))
  return jax.device_get(result.state), result.data_iterator.get_state(), time.monotonic() - start


def _assert_same_run(result, reference):
  state, position, _ = reference
  assert int(result.state['step']) == int(state['step'])
  for part in state:
    assert _tree_equal(jax.device_get(result.state[part]), state[part]), part
  assert result.data_iterator.get_state() == position


def test_sigterm_mid_run_saves_the_step_reached_and_the_resume_is_bit_identical(reference, tmp_path, monkeypatch,
                                                                                 capsys):
  # SIGTERM while the batch of step 3 is being fetched, and again during the forced save of step 3: the run stops
  # after step 3, saves it with the data position right after its batch, and the second signal does not cut the save.
  original_batch, original_save, fetched = sharding_lib.global_batch, checkpoint.Checkpointer.save, []

  def batch_then_sigterm(*args):
    fetched.append(1)
    if len(fetched) == 3:
      _sigterm_self()
    return original_batch(*args)

  def save_under_sigterm(self, step, *args, force=False):
    if force:
      _sigterm_self()
    return original_save(self, step, *args, force=force)

  monkeypatch.setattr(sharding_lib, 'global_batch', batch_then_sigterm)
  monkeypatch.setattr(checkpoint.Checkpointer, 'save', save_under_sigterm)
  interrupted = _train(_config(), tmp_path)
  assert interrupted.preempted and int(interrupted.state['step']) == 3
  assert 'SIGTERM: saved step 3, exiting' in capsys.readouterr().out
  assert checkpoint.Checkpointer(tmp_path, async_save=False).manager.all_steps() == [2, 3]
  monkeypatch.undo()
  resumed = _train(_config(), tmp_path)
  assert not resumed.preempted
  _assert_same_run(resumed, reference)


def test_sigterm_during_set_up_stops_before_the_first_step_with_nothing_saved(tmp_path, monkeypatch, capsys):
  original, handler = state_lib.TrainSetup.create, signal.getsignal(signal.SIGTERM)
  monkeypatch.setattr(state_lib.TrainSetup, 'create', lambda *args: (_sigterm_self(), original(*args))[1])
  result = _train(_config(), tmp_path)
  assert result.preempted and result.state is None
  assert 'SIGTERM during the model set-up: stopped before the first step, nothing saved' in capsys.readouterr().out
  assert checkpoint.Checkpointer(tmp_path, async_save=False).manager.all_steps() == []
  assert not (tmp_path / 'tensorboard').exists()
  assert signal.getsignal(signal.SIGTERM) == handler  # given back


def test_a_failed_save_stops_the_next_step_with_one_error_and_keeps_the_last_good_step(tmp_path, monkeypatch,
                                                                                        caplog, capsys):
  # Disk full while step 4's checksum file is written in the background: half a file, then ENOSPC.
  original = ocp.handlers.JsonCheckpointHandler._save_fn

  async def disk_full(self, item, directory):
    if pathlib.Path(directory).parent.name.startswith('4.') and self._filename == 'metadata':
      (pathlib.Path(directory) / 'metadata').write_text('{"half')
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return await original(self, item, directory)

  monkeypatch.setattr(ocp.handlers.JsonCheckpointHandler, '_save_fn', disk_full)
  original_batch, fetched = sharding_lib.global_batch, []

  def slow_batch(*args):  # steps after the failure take a second, time enough for the failed save to finish
    fetched.append(1)
    if len(fetched) > 4:
      time.sleep(1)
    return original_batch(*args)

  monkeypatch.setattr(sharding_lib, 'global_batch', slow_batch)
  with caplog.at_level(logging.INFO), pytest.raises(checkpoint.CheckpointSaveError) as failure:
    _train(_config(**{'train.log_every': 1}), tmp_path)
  message = str(failure.value)
  assert 'checkpoint step 4 could not be saved' in message and 'No space left on device' in message
  assert 'the newest good checkpoint is step 2' in message and len(message.splitlines()) == 1
  logged_steps = [int(line.split('/')[0].strip('[ ')) for line in capsys.readouterr().out.splitlines()
                  if line.startswith('[')]
  assert logged_steps[-1] in (4, 5), logged_steps  # stopped at the first step boundary that saw the failure
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR], 'orbax logged its own tracebacks'
  directory = checkpoint.checkpoint_dir(tmp_path)
  assert sorted(p.name for p in directory.iterdir()) == ['2']  # the partial step 4 is gone


def test_an_unwritable_workdir_is_refused_before_any_set_up(tmp_path, monkeypatch):
  # Tests run as root, so permissions would not stop a write: a workdir below a regular file fails for anyone.
  (tmp_path / 'file').write_text('')
  monkeypatch.setattr(state_lib.TrainSetup, 'create', lambda *args: pytest.fail('set-up ran'))
  with pytest.raises(checkpoint.WorkdirError, match=r'workdir .*file/run: cannot create .*checkpoints'):
    _train(_config(), tmp_path / 'file' / 'run')


# --- Random SIGKILL / SIGTERM of a training process (also used by benchmarks/fault_soak.py).

# A training process set up as this test session is (conftest.py: devices, compile cache, XLA flags), so its
# arithmetic is this process's: `python -c RUNNER WORKDIR`.
RUNNER = f"""
import sys
sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
import conftest  # noqa: F401
import jax
from micro import micro_config
from lumiere_jax.train import main
main.train(micro_config(**{{'train.steps': {STEPS + 1}, 'train.checkpoint_every': {CHECKPOINT_EVERY}}}), sys.argv[1],
           devices=jax.devices()[:1], until_step={STEPS})
"""


def run_process(workdir, *, signal_after_s=None, sig=signal.SIGKILL, timeout_s=600) -> dict:
  """The training process on `workdir`, sent `sig` after `signal_after_s` (None: left to finish). Returns its exit
  status, output and wall seconds."""
  start = time.monotonic()
  process = subprocess.Popen([sys.executable, '-c', RUNNER, str(workdir)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED='1'))
  try:
    output, _ = process.communicate(timeout=signal_after_s)
  except subprocess.TimeoutExpired:
    process.send_signal(sig)
    output, _ = process.communicate(timeout=timeout_s)
  run = dict(rc=process.returncode, output=output, seconds=time.monotonic() - start, sig=sig, after_s=signal_after_s)
  # SIGKILL may land anywhere; SIGTERM exits 0 while `train` handles it, and kills the process (status -15) only
  # before (Python's start-up: nothing written yet) or after (interpreter teardown: the last save committed).
  started = 'mesh {' in output
  finished = _committed_step(workdir) == STEPS
  allowed = {0, -signal.SIGKILL} if sig == signal.SIGKILL else (
      {0} if started and not finished else {0, -signal.SIGTERM})
  assert run['rc'] in allowed, f'{sig.name} after {signal_after_s} s: exit status {run["rc"]}\n{output[-3000:]}'
  return run


def _committed_step(workdir) -> int | None:
  """The newest committed checkpoint step of `workdir`, or None."""
  try:
    return checkpoint.resolve(workdir)[1]
  except FileNotFoundError:
    return None


def final_checkpoint(workdir) -> tuple[dict, dict]:
  """(every state array, the data position) of `workdir`'s step STEPS, restored on 1 device."""
  checkpointer = checkpoint.Checkpointer(workdir, async_save=False)
  config = checkpointer.restore_config(STEPS)
  setup = state_lib.TrainSetup.create(config, mesh_lib.make_mesh(config.mesh, jax.devices()[:1]))
  state = jax.device_get(checkpointer.restore(STEPS, setup.abstract_state()))
  checkpointer.close()
  data = checkpoint.checkpoint_dir(workdir) / str(STEPS) / 'data'
  return state, {path.name: json.loads(path.read_text()) for path in data.glob('process_*.json')}


@pytest.mark.starts_first
def test_random_sigkill_then_random_sigterm_then_a_rerun_end_like_the_uninterrupted_run(reference, tmp_path):
  rng = random.Random(seed := time.time_ns())
  # Up to the length of a whole run (Python start-up, set-up, compile, steps and saves): any point may be hit.
  whole_run_s = reference[2] + 5
  killed = run_process(tmp_path, signal_after_s=rng.uniform(0, whole_run_s), sig=signal.SIGKILL)
  termed = run_process(tmp_path, signal_after_s=rng.uniform(0, whole_run_s), sig=signal.SIGTERM)
  what = (f'seed {seed}: SIGKILL after {killed["after_s"]:.1f} s (exit {killed["rc"]}), SIGTERM after '
          f'{termed["after_s"]:.1f} s (exit {termed["rc"]})\n{termed["output"][-2000:]}')
  resumed = _train(_config(), tmp_path)
  assert int(resumed.state['step']) == STEPS, what
  state, position, _ = reference
  for part in state:
    assert _tree_equal(jax.device_get(resumed.state[part]), state[part]), f'{part} differs; {what}'
  assert resumed.data_iterator.get_state() == position, what
