"""Bad configs fail before anything is built or compiled, with the offending field named."""

import subprocess
import sys

import pytest

from lumiere_jax import config as config_lib
from lumiere_jax import stages, train, validation
from lumiere_jax.models import temporal_downsample_factor


def _config(arg='stage=base,size=tiny', **overrides):
  config = config_lib.load(arg)
  config.unlock()
  if stages.of(config).init_from:  # random frozen weights on purpose, unless a test gives model.init_from
    config.model.init_from = stages.RANDOM_INIT
  for field, value in overrides.items():
    section, name = field.split('__')
    config[section][name] = value
  config.lock()
  return config


def test_default_sizes_are_valid():
  for stage in ('t2i', 'base'):
    for size in ('tiny', 'small', 'paper'):
      validation.validate(_config(f'stage={stage},size={size}'), num_devices=8, num_processes=1)


def test_init_from_is_checked_up_front(tmp_path):
  """A stage built on another run refuses to start without it (its weights would stay frozen at random) or with a
  path that is no run, before anything is built; 'none', trainable spatial weights or inference skip the check."""
  with pytest.raises(config_lib.ConfigError, match=r"config\.model\.init_from: the base stage trains on top of a t2i"):
    validation.validate(_config(model__init_from=''), num_devices=8, num_processes=1)
  with pytest.raises(config_lib.ConfigError, match=r'config\.model\.init_from: .*missing.* is neither a workdir'):
    validation.validate(_config(model__init_from=str(tmp_path / 'missing')), num_devices=8, num_processes=1)
  (tmp_path / 'run' / 'checkpoints').mkdir(parents=True)
  for fine in (dict(model__init_from=str(tmp_path / 'run')), dict(model__init_from='none'),
               dict(model__init_from='', train__trainable='all')):
    validation.validate(_config(**fine), num_devices=8, num_processes=1)
  validation.validate(_config(model__init_from=''), num_devices=8, num_processes=1, training=False)


def test_intervals_follow_train_steps_unless_set():
  """Overriding train.steps alone gives a valid run whose warmup, log and checkpoint intervals fit it; the defaults
  of the shipped sizes keep their values; a value that is set wins."""
  short = _config(train__steps=7)
  validation.validate(short, num_devices=8, num_processes=1)
  assert train.intervals(short.train) == (0, 1, 1)
  assert train.intervals(_config(train__steps=2400).train) == (240, 25, 200)
  assert train.intervals(_config('stage=base,size=paper').train) == (1000, 25, 200)
  assert train.intervals(_config(train__steps=7, train__log_every=3).train) == (0, 3, 1)


def test_paper_size_is_the_published_shape():
  config = _config('stage=base,size=paper')
  assert (config.model.image_size, config.model.num_frames, config.data.fps) == (128, 80, 16)
  assert temporal_downsample_factor(config.model) == 16  # 80 -> 40 -> 20 -> 10 -> 5 frames


@pytest.mark.parametrize('overrides, field', [
    (dict(model__num_frames=6), 'model.num_frames'),
    (dict(model__image_size=30), 'model.image_size'),
    (dict(model__temporal_downsample=(True,)), 'model.temporal_downsample'),
    (dict(model__attention_resolutions=(12,)), 'model.attention_resolutions'),
    (dict(model__norm_groups=7), 'model.norm_groups'),
    (dict(model__num_heads=3), 'model.num_heads'),
    (dict(model__dtype='float16'), 'model.dtype'),
    (dict(model__remat_policy='save_everything_please'), 'model.remat_policy'),
    (dict(model__cond_channels=3), 'model.cond_channels'),  # the base stage feeds no conditioning
    (dict(text__num_heads=3), 'text.num_heads'),
    (dict(sample__sampler='euler'), 'sample.sampler'),
    (dict(sample__dynamic_threshold=1.5), 'sample.dynamic_threshold'),
    (dict(train__ema_decay=1.0), 'train.ema_decay'),
    (dict(train__warmup_steps=10_000), 'train.warmup_steps'),
    (dict(data__max_bad_fraction=2.0), 'data.max_bad_fraction'),
    (dict(data__short_clips='stretch'), 'data.short_clips'),
    (dict(data__crop='left'), 'data.crop'),
    (dict(diffusion__logsnr_max=-20.0), 'diffusion.logsnr_max'),
    (dict(train__batch_size=6), 'train.batch_size'),  # 8 devices on the data axis
    (dict(mesh__data=3), 'config.mesh'),  # 3 does not fill 8 devices
    (dict(mesh__axis_rules=(('embed', 'model'),)), 'mesh.axis_rules'),
])
def test_invalid_field_is_named(overrides, field):
  with pytest.raises(config_lib.ConfigError, match=field.replace('.', r'\.')):
    validation.validate(_config(**overrides), num_devices=8, num_processes=1)


def test_t2i_cannot_train_temporal_only():
  config = _config('stage=t2i,size=tiny', train__trainable='temporal')
  with pytest.raises(config_lib.ConfigError, match=r'train\.trainable'):
    validation.validate(config, num_devices=1, num_processes=1)


def test_every_problem_is_reported_at_once():
  config = _config(model__num_frames=6, sample__steps=0)
  with pytest.raises(config_lib.ConfigError) as error:
    validation.validate(config, num_devices=1, num_processes=1)
  assert 'model.num_frames' in str(error.value) and 'sample.steps' in str(error.value)


def test_unknown_key_and_wrong_type_are_refused_by_the_locked_config():
  config = config_lib.load('stage=base,size=tiny')
  with pytest.raises(AttributeError, match='num_framez'):
    config.model.num_framez = 8
  with pytest.raises(TypeError, match='steps'):
    config.train.steps = 'ten'


@pytest.mark.parametrize('arg, field', [('stage=video', 'stage'), ('size=huge', 'size'), ('depth=3', 'depth')])
def test_bad_config_argument(arg, field):
  with pytest.raises(ValueError, match=field):
    config_lib.load(arg)


def test_saved_config_round_trips_with_types():
  config = _config(model__channel_mults=(1, 2, 4), train__steps=7)
  restored = config_lib.from_json(config.to_json())
  assert restored.model.channel_mults == (1, 2, 4) and restored.train.steps == 7
  assert restored.mesh.axis_rules == config.mesh.axis_rules


def test_cli_rejects_unknown_override_before_compiling(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'lumiere_jax.cli.train', '--config', 'configs/lumiere.py:stage=base,size=tiny',
       '--config.model.num_framez=8', '--workdir', str(tmp_path / 'run')],
      capture_output=True, text=True, timeout=120, cwd=config_lib.CONFIG_FILE.parent.parent)
  assert result.returncode != 0
  assert 'num_framez' in result.stderr
  assert not (tmp_path / 'run').exists()
