"""`lumiere-train --dry_run` checks the config and every path it names in seconds, without reading data or compiling;
every tool turns on the persistent compile cache (`cli/compile_cache.py`). In this process, as test_cli_errors.py."""

import pathlib
import sys
import time

from absl import flags
from flax import nnx
import jax
import numpy as np
import pytest

from lumiere_jax import config as config_lib, models
from lumiere_jax.cli import compile_cache
from lumiere_jax.data import pipeline
from lumiere_jax.train import main as train_main
from test_cli_errors import TRAIN_CONFIG, _tool


def _fail(*args, **kwargs):
  raise AssertionError('a dry run must not build data iterators or train')


@pytest.fixture()
def dry_run(monkeypatch, capsys, tmp_path):
  """Runs `lumiere-train --dry_run` with these flags: (exit status, stdout, stderr)."""
  monkeypatch.setattr(pipeline, 'make_train_iterator', _fail)
  monkeypatch.setattr(train_main, '_train', _fail)
  monkeypatch.setenv('LUMIERE_CACHE_DIR', str(tmp_path / 'cache'))
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  monkeypatch.delenv('LUMIERE_COMPILE_CACHE', raising=False)
  saved_cache = jax.config.jax_compilation_cache_dir
  jax.config.update('jax_compilation_cache_dir', None)  # unset, as in a fresh process (conftest sets one)

  def run(*args):
    with _tool('train') as tool:
      monkeypatch.setattr(sys, 'argv', ['lumiere-train', '--dry_run', '--workdir', str(tmp_path / 'run'), *args])
      with pytest.raises(SystemExit) as exit_:
        tool.run()
      for name in [name for name in flags.FLAGS if name.startswith('config.')]:
        delattr(flags.FLAGS, name)  # the --config.* overrides, defined per parse: the next run defines them again
    output = capsys.readouterr()
    return exit_.value.code or 0, output.out, output.err

  yield run
  jax.config.update('jax_compilation_cache_dir', saved_cache)


def _parameter_count(config) -> int:
  """Parameters of the model actually built (a reference independent of the abstract `model_spec`)."""
  model = models.build_model(config, rngs=nnx.Rngs(0))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_dry_run_summarises_a_valid_run_in_seconds(dry_run, tmp_path):
  t2i = tmp_path / 't2i'
  (t2i / 'checkpoints').mkdir(parents=True)
  start = time.monotonic()
  status, out, err = dry_run('--config', TRAIN_CONFIG, f'--config.model.init_from={t2i}', '--config.train.steps=500')
  seconds = time.monotonic() - start
  assert status == 0, err
  count = _parameter_count(config_lib.load('stage=base,size=tiny'))
  assert out.startswith('dry run: config and paths OK')
  assert f'stage base: {count:,} parameters' in out
  assert 'data: synthetic moving shapes' in out and 'training: 500 steps of batch 8' in out
  assert f'workdir: {tmp_path / "run"}: a new run' in out
  assert seconds < 60, seconds  # seconds in practice; no data read, nothing compiled
  # The compile cache of every tool: $LUMIERE_CACHE_DIR/jax here.
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'cache' / 'jax')


@pytest.mark.parametrize('override, expected', [
    ('--config.model.init_from={tmp}/no_t2i', 'config.model.init_from:'),
    ("--config.data.source={tmp}/none-*.array_record", 'data.source='),
    ('--config.text.encoder=t5', 'config.text.checkpoint: text.encoder="t5" needs'),
], ids=['init_from', 'data source', 'text checkpoint'])
def test_dry_run_names_a_bad_path(override, expected, dry_run, tmp_path):
  t2i = tmp_path / 't2i'
  (t2i / 'checkpoints').mkdir(parents=True)
  init_from = [] if 'init_from' in override else [f'--config.model.init_from={t2i}']
  status, out, err = dry_run('--config', TRAIN_CONFIG, *init_from, override.format(tmp=tmp_path))
  assert status == 1 and 'dry run: config and paths OK' not in out
  assert expected in err and 'Traceback' not in err, err


def test_compile_cache_location_and_switches(tmp_path):
  home = pathlib.Path('~/.cache/lumiere_jax/jax').expanduser()
  assert compile_cache.cache_dir({}) == home
  assert compile_cache.cache_dir({'LUMIERE_CACHE_DIR': str(tmp_path)}) == tmp_path / 'jax'
  explicit = {'LUMIERE_CACHE_DIR': str(tmp_path), 'JAX_COMPILATION_CACHE_DIR': '/elsewhere'}
  assert compile_cache.cache_dir(explicit) == pathlib.Path('/elsewhere')
  assert compile_cache.cache_dir({**explicit, 'LUMIERE_COMPILE_CACHE': '0'}) is None
  saved = jax.config.jax_compilation_cache_dir
  try:
    jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'set'))  # set by the caller: kept
    assert compile_cache.configure(True, {'LUMIERE_CACHE_DIR': str(tmp_path)}) == tmp_path / 'set'
    assert compile_cache.configure(False, {}) is None and jax.config.jax_compilation_cache_dir is None
  finally:
    jax.config.update('jax_compilation_cache_dir', saved)
