"""Config loading and validation, run before anything is built or compiled.

`configs/lumiere.py` returns a locked ConfigDict, so unknown keys and wrong types already fail on override with the
field named. `validate` checks what types cannot: ranges, divisibility, the mesh against the devices, and how fields
relate. Every problem found is reported at once, each prefixed with its field (`config.model.num_frames: ...`).
"""

import importlib.util
import json
import math
import pathlib

import jax
import ml_collections

from lumiere_jax import models
from lumiere_jax.data import tokenizers
from lumiere_jax.data.transforms import CROPS, SHORT_CLIP_POLICIES
from lumiere_jax.eval import i3d, zero_shot
from lumiere_jax.models import t5, t5_weights
from lumiere_jax.models.stunet import temporal_downsample_factor
from lumiere_jax.parallel import mesh as mesh_lib

CONFIG_FILE = pathlib.Path(__file__).resolve().parent.parent / 'configs' / 'lumiere.py'
DTYPES = ('float32', 'bfloat16')
SAMPLERS = ('ddim', 'ancestral')
NONFINITE_POLICIES = ('skip', 'stop')
TEXT_ENCODERS = ('builtin', 't5')


class ConfigError(ValueError):
  """One or more invalid config fields; the message lists each as `config.<field>: <problem>`."""


def load(arg: str = '', path: str | pathlib.Path = CONFIG_FILE) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file, as `--config path:arg` would give it."""
  spec = importlib.util.spec_from_file_location('lumiere_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def from_json(text: str) -> ml_collections.ConfigDict:
  """A config saved with a checkpoint, rebuilt on the file's schema (so saved runs keep their types)."""
  saved = json.loads(text)
  config = load(f'stage={saved["stage"]},size={saved["size"]}')
  config.unlock()
  config.update_from_flattened_dict(_flatten(saved))
  config.lock()
  return config


def _flatten(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = tuple(map(_tuplify, value)) if isinstance(value, list) else value
  return out


def _tuplify(value):
  return tuple(map(_tuplify, value)) if isinstance(value, list) else value


def _model_errors(config):
  m = config.model
  levels = len(m.channel_mults)
  if levels < 1:
    yield 'model.channel_mults', 'needs at least one level'
    return
  if len(m.temporal_downsample) != levels - 1:
    yield 'model.temporal_downsample', (f'needs one flag per spatial resize ({levels - 1} for {levels} levels), '
                                        f'got {len(m.temporal_downsample)}')
  if m.image_size % 2 ** (levels - 1):
    yield 'model.image_size', f'{m.image_size} is not divisible by 2**{levels - 1} (the spatial downsamplings)'
  if config.stage != 't2i' and m.num_frames % temporal_downsample_factor(m):
    yield 'model.num_frames', (f'{m.num_frames} is not divisible by {temporal_downsample_factor(m)} = 2**(temporal '
                               'downsamplings in model.temporal_downsample)')
  level_sizes = {m.image_size // 2 ** i for i in range(levels)}
  for res in m.attention_resolutions:
    if res not in level_sizes:
      yield 'model.attention_resolutions', f'{res} is not a level resolution (levels: {sorted(level_sizes)})'
  for width in {m.channels * mult for mult in m.channel_mults}:
    if width % m.norm_groups:
      yield 'model.norm_groups', f'{m.norm_groups} does not divide the level width {width}'
    if width % m.num_heads:
      yield 'model.num_heads', f'{m.num_heads} does not divide the level width {width}'
  if m.dtype not in DTYPES:
    yield 'model.dtype', f'{m.dtype!r} is not one of {DTYPES}'
  if m.remat_policy != 'none' and not hasattr(jax.checkpoint_policies, m.remat_policy):
    yield 'model.remat_policy', f'{m.remat_policy!r} is neither "none" nor a name in jax.checkpoint_policies'
  if not 0 <= m.dropout < 1:
    yield 'model.dropout', f'{m.dropout} is outside [0, 1)'
  if m.cond_channels < 0:
    yield 'model.cond_channels', f'{m.cond_channels} must be >= 0'
  want = models.stage_conditioning(config) or models.Conditioning('no conditioning video', 0, False)
  if (m.cond_channels, m.cond_noise_level) != (want.channels, want.noise_level):
    yield 'model.cond_channels', (
        f'stage {config.stage} (sr.factor={config.sr.factor}) feeds the model {want.name}: needs cond_channels='
        f'{want.channels} and cond_noise_level={want.noise_level}, got {m.cond_channels} and {m.cond_noise_level}')
  if m.init_from and config.stage == 't2i':
    yield 'model.init_from', 'only the base and ssr stages initialise from a t2i checkpoint'


def _sr_errors(config):
  """The super-resolution section: sr.factor only for SR models; the windows of the ssr stage."""
  sr, m = config.sr, config.model
  if config.stage == 'base' and sr.factor:
    yield 'sr.factor', f'{sr.factor}: the base stage is no super-resolution model; keep 0'
  if config.stage == 'ssr' and sr.factor < 1:
    yield 'sr.factor', f'{sr.factor}: the ssr stage needs the low-res to high-res ratio, >= 1'
  if sr.factor < 0 or (sr.factor and m.image_size % sr.factor):
    yield 'sr.factor', f'{sr.factor} does not divide model.image_size={m.image_size} into a low-res size'
  for name in ('train_augment', 'sample_augment'):
    if not 0 <= sr[name] <= 1:
      yield f'sr.{name}', f'{sr[name]} is not a diffusion time in [0, 1]'
  if config.stage != 'ssr':
    return
  if not 1 <= sr.window <= m.num_frames:
    yield 'sr.window', f'{sr.window} must be in [1, model.num_frames={m.num_frames}]'
  if not 0 <= sr.overlap < sr.window:
    yield 'sr.overlap', f'{sr.overlap} must be in [0, sr.window={sr.window})'
  if any(m.temporal_downsample):
    yield 'model.temporal_downsample', (f'{m.temporal_downsample}: the SSR has no temporal resampling (it runs on '
                                        'windows of any length); all False')


def _conditional_errors(config):
  """The conditional stage's mask mixture: one weight per mask kind, >= 0, not all 0."""
  weights = dict(config.conditional.items())
  if config.stage == 'conditional' and (min(weights.values()) < 0 or not sum(weights.values()) > 0):
    yield 'conditional', f'mask weights {weights} must be >= 0 and not all 0'


def _text_errors(config):
  text = config.text
  if text.max_length < 2:
    yield 'text.max_length', f'{text.max_length} leaves no room for a token and the EOS; must be >= 2'
  if text.encoder == 'builtin':
    if text.width % text.num_heads:
      yield 'text.num_heads', f'{text.num_heads} does not divide text.width={text.width}'
    if text.checkpoint:
      yield 'text.checkpoint', f'{text.checkpoint!r}: only text.encoder="t5" loads a checkpoint'
    if text.tokenizer not in ('', 'bytes'):
      yield 'text.tokenizer', f'{text.tokenizer!r}: the built-in encoder reads bytes ("" or "bytes")'
  elif text.encoder == 't5':
    yield from _t5_errors(text)
  else:
    yield 'text.encoder', f'{text.encoder!r} is not one of {TEXT_ENCODERS}'


def _t5_errors(text):
  if not text.checkpoint:
    yield 'text.checkpoint', 'text.encoder="t5" needs a Hugging Face T5 checkpoint directory'
    return
  try:
    t5_config = t5.T5Config.from_checkpoint(text.checkpoint)
  except ValueError as e:
    yield 'text.checkpoint', str(e)
    return
  directory = pathlib.Path(text.checkpoint)
  if not any((directory / name).is_file() for name in (t5_weights.SINGLE_FILE, t5_weights.INDEX_FILE)):
    yield 'text.checkpoint', f'{directory} has neither {t5_weights.SINGLE_FILE} nor {t5_weights.INDEX_FILE}'
  if text.width != t5_config.d_model:
    yield 'text.width', f"{text.width} must equal the T5 checkpoint's d_model={t5_config.d_model}"
  model_file = pathlib.Path(text.tokenizer or directory / tokenizers.T5_SENTENCEPIECE_FILE)
  if text.tokenizer != 'bytes' and not model_file.is_file():
    yield 'text.tokenizer', (f'SentencePiece model {model_file} not found (set text.tokenizer to a .model file, or '
                             '"bytes" for a ByT5 checkpoint)')


def _range_errors(config):
  d, s, t, data = config.diffusion, config.sample, config.train, config.data
  checks = [
      ('diffusion.logsnr_max', d.logsnr_max > d.logsnr_min, f'must exceed diffusion.logsnr_min={d.logsnr_min}'),
      ('diffusion.text_dropout', 0 <= d.text_dropout <= 1, 'must be in [0, 1]'),
      ('sample.sampler', s.sampler in SAMPLERS, f'must be one of {SAMPLERS}'),
      ('sample.steps', s.steps >= 1, 'must be >= 1'),
      ('sample.eta', 0 <= s.eta <= 1, 'must be in [0, 1]'),
      ('sample.guidance', s.guidance >= 0, 'must be >= 0'),
      ('sample.dynamic_threshold', 0 <= s.dynamic_threshold < 1, 'must be in [0, 1)'),
      ('sample.fps', s.fps > 0, 'must be > 0'),
      ('data.fps', data.fps > 0, 'must be > 0'),
      ('data.synthetic_clips', data.synthetic_clips >= 1, 'must be >= 1'),
      ('data.num_workers', data.num_workers >= 0, 'must be >= 0'),
      ('data.short_clips', data.short_clips in SHORT_CLIP_POLICIES, f'must be one of {SHORT_CLIP_POLICIES}'),
      ('data.crop', data.crop in CROPS, f'must be one of {CROPS}'),
      ('data.tfds_fps', data.tfds_fps >= 0, 'must be >= 0 (0: read it from data.tfds_fps_key)'),
      ('data.max_bad_fraction', 0 <= data.max_bad_fraction < 1,
       'must be in [0, 1) (1 would loop forever on all-bad data)'),
      ('train.batch_size', t.batch_size >= 1, 'must be >= 1'),
      ('train.steps', t.steps >= 1, 'must be >= 1'),
      ('train.learning_rate', t.learning_rate > 0, 'must be > 0'),
      ('train.warmup_steps', 0 <= t.warmup_steps <= t.steps, f'must be in [0, train.steps={t.steps}]'),
      ('train.weight_decay', t.weight_decay >= 0, 'must be >= 0'),
      ('train.grad_clip', t.grad_clip > 0, 'must be > 0'),
      ('train.ema_decay', 0 <= t.ema_decay < 1, 'must be in [0, 1)'),
      ('train.log_every', t.log_every >= 1, 'must be >= 1'),
      ('train.checkpoint_every', t.checkpoint_every >= 1, 'must be >= 1'),
      ('train.keep_checkpoints', t.keep_checkpoints >= 1, 'must be >= 1'),
      ('train.nonfinite', t.nonfinite in NONFINITE_POLICIES, f'must be one of {NONFINITE_POLICIES}'),
      ('train.max_nonfinite_in_a_row', t.max_nonfinite_in_a_row >= 1, 'must be >= 1'),
      ('train.trainable', not (config.stage == 't2i' and t.trainable == 'temporal'),
       'the t2i stage has no temporal parameters; use "all"'),
      ('mesh.max_replicated_fraction', 0 <= config.mesh.max_replicated_fraction <= 1, 'must be in [0, 1]'),
  ]
  for field, ok, problem in checks:
    if not ok:
      yield field, f'{config[field.split(".")[0]][field.split(".")[1]]!r} {problem}'


def _eval_errors(config):
  """The in-training FVD: a text-to-video stage, clips I3D can read and a UCF101 copy to compare with."""
  e = config.eval
  if e.fvd_every_steps < 0:
    yield 'eval.fvd_every_steps', f'{e.fvd_every_steps} must be >= 0 (0: never)'
  if e.fvd_every_steps <= 0:
    return
  if e.fvd_num_videos < 2:
    yield 'eval.fvd_num_videos', f'{e.fvd_num_videos} must be >= 2 (a covariance needs two videos)'
  if config.stage != 'base':
    yield 'eval.fvd_every_steps', f'stage {config.stage} does not generate videos from text alone; only base does'
  if config.model.num_frames < i3d.MIN_FRAMES:
    yield 'eval.fvd_every_steps', f'model.num_frames={config.model.num_frames}: I3D needs >= {i3d.MIN_FRAMES} frames'
  if not (pathlib.Path(e.fvd_ucf101_dir) / 'ucfTrainTestlist' / 'classInd.txt').is_file():
    yield 'eval.fvd_ucf101_dir', f'{e.fvd_ucf101_dir!r} is not a UCF101 root (no ucfTrainTestlist/classInd.txt)'


def _mesh_errors(config, num_devices, num_processes):
  try:
    sizes = mesh_lib.mesh_shape(config.mesh, num_devices)
  except ValueError as e:
    yield 'mesh', str(e).removeprefix('config.mesh')
    return
  for logical, axes in config.mesh.axis_rules:
    for axis in (axes,) if isinstance(axes, str) else axes:
      if axis not in mesh_lib.MESH_AXES:
        yield 'mesh.axis_rules', f'{logical!r} maps to unknown mesh axis {axis!r} (axes: {mesh_lib.MESH_AXES})'
  data_parallel = math.prod(sizes[a] for a in mesh_lib.BATCH_AXES)
  if config.train.batch_size % data_parallel:
    yield 'train.batch_size', (f'{config.train.batch_size} is not divisible by the data-parallel mesh size '
                               f'{data_parallel} (mesh.data x mesh.fsdp)')
  if config.train.batch_size % num_processes:
    yield 'train.batch_size', f'{config.train.batch_size} is not divisible by the {num_processes} processes'


def validate(config, num_devices: int | None = None, num_processes: int | None = None) -> None:
  """Raises ConfigError listing every invalid field; call before building or compiling anything."""
  num_devices = jax.device_count() if num_devices is None else num_devices
  num_processes = jax.process_count() if num_processes is None else num_processes
  errors = [*_model_errors(config), *_sr_errors(config), *_conditional_errors(config), *_text_errors(config),
            *_range_errors(config), *_eval_errors(config), *_mesh_errors(config, num_devices, num_processes)]
  if errors:
    raise ConfigError('invalid config:\n' + '\n'.join(f'  config.{field}: {problem}' for field, problem in errors))


def validate_eval(config) -> None:
  """Raises ConfigError listing every invalid field of an evaluation config (configs/eval_ucf101.py)."""
  c = config
  checks = [
      ('num_videos', c.num_videos >= 2, 'must be >= 2 (a covariance needs two videos)'),
      ('frames', c.frames >= i3d.MIN_FRAMES, f'must be >= {i3d.MIN_FRAMES} (I3D pools time by 8, then by 2)'),
      ('real_set', c.real_set in zero_shot.REAL_SETS, f'must be one of {tuple(zero_shot.REAL_SETS)}'),
      ('real_fps', c.real_fps > 0, 'must be > 0'),
      ('chunk_size', c.chunk_size >= 1, 'must be >= 1'),
      ('is_splits', c.is_splits >= 1, 'must be >= 1'),
      ('prompts', pathlib.Path(c.prompts).is_file(), 'is not a file'),
      ('sample_steps', c.sample_steps is None or c.sample_steps >= 1, 'must be >= 1 (unset: the run\'s)'),
      ('guidance', c.guidance is None or c.guidance >= 0, 'must be >= 0 (unset: the run\'s)'),
  ]
  errors = [f'  config.{field}: {c[field]!r} {problem}' for field, ok, problem in checks if not ok]
  if errors:
    raise ConfigError('invalid evaluation config:\n' + '\n'.join(errors))
