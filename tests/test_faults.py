"""Fault tolerance: a corrupted checkpoint falls back to the step before (one-line reasons); non-finite steps are
skipped and counted; too many bad records stop the job, judged over enough records and named."""

import itertools
import json
import logging
import re
import shutil

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax import config as config_lib
from lumiere_jax import validation
from lumiere_jax.data import pipeline, records, tokenizers
from lumiere_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import checkpoint, main as train_main, metrics as metrics_lib
from lumiere_jax.train import state as state_lib, step as step_lib
from micro import micro_config
from test_pipeline import make_config, mixed_source  # noqa: F401  (a fixture)
from test_train import _batch, _tree_equal


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A 4-step micro run with checkpoints at steps 2 and 4, and its final state."""
  config = micro_config(**{'train.steps': 4, 'train.checkpoint_every': 2})
  workdir = tmp_path_factory.mktemp('run')
  result = train_main.train(config, workdir, devices=jax.devices()[:1])
  return config, workdir, jax.device_get(result.state)


def _setup(config):
  return state_lib.TrainSetup.create(config, mesh_lib.make_mesh(config.mesh, jax.devices()[:1]))


def _iterator(config):
  return pipeline.make_train_iterator(config, process_index=0, process_count=1)


def _data_files(step_dir):
  return sorted((p for p in (step_dir / 'state').rglob('*') if p.is_file() and p.parent.name == 'd'),
                key=lambda p: p.stat().st_size)


def _flip_bits(path):
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 2, len(data) // 2 + 16):
    data[i] ^= 0x10
  path.write_bytes(bytes(data))


# Each corruption, and what reports it: orbax/tensorstore for the first three, our checksums for flipped bits.
CORRUPTIONS = {
    'truncated array file': lambda d: _data_files(d)[-1].write_bytes(_data_files(d)[-1].read_bytes()[:1000]),
    'zeroed array file': lambda d: _data_files(d)[-1].write_bytes(bytes(_data_files(d)[-1].stat().st_size)),
    'deleted metadata': lambda d: (d / 'state' / '_METADATA').unlink(),
    'flipped bits': lambda d: _flip_bits(_data_files(d)[-1]),
}


@pytest.mark.parametrize('corruption', CORRUPTIONS)
def test_a_corrupted_latest_step_falls_back_to_the_previous_one(run, tmp_path, corruption, caplog):
  config, workdir, _ = run
  setup = _setup(config)
  reference_iterator = _iterator(config)
  reference = jax.device_get(checkpoint.Checkpointer(workdir, async_save=False).restore(
      2, setup.abstract_state(), reference_iterator))
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  CORRUPTIONS[corruption](checkpoint.checkpoint_dir(copy) / '4')

  checkpointer = checkpoint.Checkpointer(copy, async_save=False)
  iterator = _iterator(config)
  with caplog.at_level(logging.WARNING):
    step, state = checkpointer.restore_latest(setup.abstract_state(), iterator)
  assert step == 2
  assert _tree_equal(jax.device_get(state), reference)
  next_batch, reference_batch = next(iterator), next(reference_iterator)
  assert all(np.array_equal(next_batch[k], reference_batch[k]) for k in reference_batch)
  warnings = [r.getMessage() for r in caplog.records if 'could not be restored' in r.getMessage()]
  assert len(warnings) == 1 and len(warnings[0].splitlines()) == 1, warnings  # one line: step, file, cause
  assert warnings[0].startswith('checkpoint step 4 could not be restored: ') and str(copy) in warnings[0]
  assert {'deleted metadata': '_METADATA is missing', 'flipped bits': 'differ from the checksums',
          'truncated array file': '(array ', 'zeroed array file': '(array '}[corruption] in warnings[0]
  # The bad step is set aside, not deleted, so saving step 4 again works.
  assert checkpointer.latest_step() == 2
  assert [p.name.split('-')[0] for p in checkpoint.unreadable_dir(copy).iterdir()] == ['4']
  checkpointer.close()


def test_no_restorable_step_lists_every_failure_and_leaves_the_iterator_alone(run, tmp_path):
  config, workdir, _ = run
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  for step in (2, 4):
    CORRUPTIONS['truncated array file'](checkpoint.checkpoint_dir(copy) / str(step))
  iterator = _iterator(config)
  position = iterator.get_state()
  with pytest.raises(checkpoint.RestoreError, match=r'(?s)step 4: .*step 2: '):
    checkpoint.Checkpointer(copy, async_save=False).restore_latest(_setup(config).abstract_state(), iterator)
  assert iterator.get_state() == position
  assert not checkpoint.unreadable_dir(copy).exists()


def test_training_resumes_past_a_corrupted_step_bit_exactly(run, tmp_path):
  config, workdir, final = run
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  CORRUPTIONS['zeroed array file'](checkpoint.checkpoint_dir(copy) / '4')
  resumed = train_main.train(config, copy, devices=jax.devices()[:1])
  assert _tree_equal(jax.device_get(resumed.state), final)
  saved = checkpoint.Checkpointer(copy, async_save=False).restore(4, _setup(config).abstract_state())
  assert _tree_equal(jax.device_get(saved), final)


def _edit_checksum(step_dir, part):
  """Makes the saved checksum of one array of `part` ('ema', 'opt_state', ...) wrong."""
  path = step_dir / 'checksum' / 'metadata'
  sums = json.loads(path.read_text())
  name = next(name for name in sorted(sums) if name.startswith(f"['{part}']"))
  sums[name] = [sums[name][0] + 1, sums[name][1]]
  path.write_text(json.dumps(sums))
  return name


@pytest.mark.parametrize('use_ema', [True, False])
def test_inference_loads_read_and_check_the_parameters_alone(run, tmp_path, use_ema):
  config, workdir, final = run
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  _, step, params = checkpoint.load_inference_params(workdir, mesh, use_ema=use_ema)
  assert step == 4 and _tree_equal(jax.device_get(params), state_lib.inference_params(final, use_ema))
  # A bad optimizer moment stops a resume but not an inference load, which never reads the moments; a bad
  # parameter stops both.
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  _edit_checksum(checkpoint.checkpoint_dir(copy) / '4', 'opt_state')
  with pytest.raises(ValueError, match='differ from the checksums'):
    checkpoint.Checkpointer(copy, async_save=False).restore(4, _setup(config).abstract_state())
  assert _tree_equal(jax.device_get(checkpoint.load_inference_params(copy, mesh, use_ema=use_ema)[2]), params)
  name = _edit_checksum(checkpoint.checkpoint_dir(copy) / '4', 'ema' if use_ema else 'params')
  with pytest.raises(ValueError, match=re.escape(name)):
    checkpoint.load_inference_params(copy, mesh, use_ema=use_ema)


def _poison(monkeypatch, bad_calls):
  """Makes the loss (and so every gradient) NaN on the chosen executions (1-based) of the train step."""
  calls = itertools.count(1)
  original = step_lib.loss_and_metrics

  def poisoned(*args):
    loss, aux = original(*args)
    bad = jax.pure_callback(lambda: np.bool_(next(calls) in bad_calls), jax.ShapeDtypeStruct((), jnp.bool_))
    return loss * jnp.where(bad, jnp.nan, 1.0), aux

  monkeypatch.setattr(step_lib, 'loss_and_metrics', poisoned)


def test_a_nonfinite_step_changes_nothing_but_the_step_counter(monkeypatch):
  config = micro_config()
  setup = _setup(config)
  _poison(monkeypatch, {2})
  step = step_lib.jit_train_step(setup)
  state = setup.init()
  states, nonfinite = [], []
  for i in range(3):
    state, metrics = step(state, sharding_lib.global_batch(_batch(config, i), setup.mesh))
    states.append(jax.device_get(state))
    nonfinite.append(int(metrics['nonfinite']))
  assert nonfinite == [0, 1, 0]
  assert [int(s['step']) for s in states] == [1, 2, 3]
  for part in ('params', 'ema', 'opt_state'):
    assert _tree_equal(states[0][part], states[1][part]), part
    assert not _tree_equal(states[1][part], states[2][part]), part


def test_training_skips_and_counts_nonfinite_steps_then_stops_after_too_many_in_a_row(monkeypatch, tmp_path, capsys):
  config = micro_config(**{'train.steps': 6, 'train.checkpoint_every': 2, 'train.log_every': 1,
                           'train.max_nonfinite_in_a_row': 2})
  _poison(monkeypatch, {2, 4, 5})
  with pytest.raises(train_main.NonfiniteError, match=r'step 5: 2 non-finite step\(s\) in a row'):
    train_main.train(config, tmp_path, devices=jax.devices()[:1])
  output = capsys.readouterr().out
  assert 'step 2: non-finite loss or gradient (loss=nan' in output and '(1 in a row, 1 in all)' in output
  assert 'step 5: non-finite loss or gradient' in output and '(2 in a row, 3 in all)' in output
  assert 'nonfinite_steps=1.0000' in output  # logged at step 3
  assert checkpoint.Checkpointer(tmp_path, async_save=False).manager.all_steps() == [2, 4]  # nothing after the stop


@pytest.mark.parametrize('policy, flags, stops_at', [('stop', [0, 1], 2), ('skip', [1, 0, 1, 1, 0], None),
                                                     ('skip', [0, 1, 1, 1], 4)])
def test_nonfinite_policy(policy, flags, stops_at, tmp_path):
  config = micro_config(**{'train.nonfinite': policy, 'train.max_nonfinite_in_a_row': 3})
  guard = train_main._NonfiniteGuard(config.train, metrics_lib.MetricWriter(tmp_path, 10))
  stopped = None
  for step, flag in enumerate(flags, 1):
    guard.add(step, dict(nonfinite=np.int32(flag), loss=np.float32(np.nan if flag else 1), grad_norm=np.float32(1)))
    try:
      guard.check()
    except train_main.NonfiniteError as e:
      stopped = step
      assert ("train.nonfinite='stop'" if policy == 'stop' else 'train.max_nonfinite_in_a_row=3') in str(e)
      break
  assert stopped == stops_at
  assert guard.total == sum(flags[:stops_at])


@pytest.mark.parametrize('field, value', [('nonfinite', 'ignore'), ('max_nonfinite_in_a_row', 0)])
def test_nonfinite_config_is_validated(field, value):
  with pytest.raises(config_lib.ConfigError, match=rf'config\.train\.{field}: '):
    validation.validate(micro_config(**{f'train.{field}': value}), num_devices=1)


def test_the_bad_fraction_is_judged_over_a_minimum_of_records_and_names_the_bad_ones(tmp_path, mixed_source):
  # 8 of every 32 records are bad (25%), above max_bad_fraction=0.1, but nothing is judged before 40 records.
  config = make_config(tmp_path, source=mixed_source, max_bad_fraction=0.1, min_records_for_bad_fraction=40)
  iterator = pipeline.make_train_iterator(config)
  with pytest.raises(pipeline.BadDataError, match=r'records read by this process were bad') as info:
    for _ in range(20):
      next(iterator)
  assert 40 <= iterator.stats['records_read'] <= 41
  named = re.findall(r"shard (\S+) record (\d+)(?: \(key '([^']+)'\))?: ", str(info.value))
  assert len(named) == 3, str(info.value)
  transform = pipeline.ClipTransform(records.decode_record, config.model.image_size, config.model.num_frames,
                                     config.data.fps, tokenizers.build_tokenizer(config.text), train=False)
  for path, index, key in named:  # each named record is where the message says, and bad
    raw = grain.sources.ArrayRecordDataSource([path])[int(index)]
    marker = transform.random_map((int(index), raw), np.random.default_rng(0))
    assert 'bad' in marker and marker['key'] == key, (path, index, marker)
