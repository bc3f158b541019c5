"""The rules of the `model` config section: shapes the backbone can build and inflate, dtype, remat, dropout."""

import jax

from lumiere_jax import backbones, stages
from lumiere_jax.diffusion.parameterization import Parameterization
from lumiere_jax.models.deepfloyd_if_config import IFUNetConfig
from lumiere_jax.models import layers, stunet
from lumiere_jax.models.stunet import temporal_downsample_factor

DTYPES = ('float32', 'bfloat16')


def config_errors(config):
  """(field, problem) for every `model` field the backbone cannot build or run with."""
  m = config.model
  if m.backbone not in backbones.BACKBONES:
    yield 'model.backbone', f'{m.backbone!r} is not one of {backbones.BACKBONES}'
    return
  widths = yield from (_deepfloyd_errors(config) if m.backbone == 'deepfloyd_if' else _lumiere_errors(config))
  if widths is None:
    return
  levels = len(widths)
  if len(m.temporal_downsample) != levels - 1:
    yield 'model.temporal_downsample', (f'needs one flag per spatial resize ({levels - 1} for {levels} levels), '
                                        f'got {len(m.temporal_downsample)}')
  if m.image_size % 2 ** (levels - 1):
    yield 'model.image_size', f'{m.image_size} is not divisible by 2**{levels - 1} (the spatial downsamplings)'
  inflated = stages.of(config).inflated
  if inflated and m.num_frames % temporal_downsample_factor(m):
    yield 'model.num_frames', (f'{m.num_frames} is not divisible by {temporal_downsample_factor(m)} = 2**(temporal '
                               'downsamplings in model.temporal_downsample)')
  if inflated or m.backbone == 'lumiere':  # the temporal blocks' norms and heads; all of our backbone's
    for width in sorted(set(widths)):
      if width % m.norm_groups:
        yield 'model.norm_groups', f'{m.norm_groups} does not divide the level width {width}'
      if width % m.num_heads:
        yield 'model.num_heads', f'{m.num_heads} does not divide the level width {width}'
  if m.dtype not in DTYPES:
    yield 'model.dtype', f'{m.dtype!r} is not one of {DTYPES}'
  for name in ('remat_policy', 'remat_coarse_policy'):
    if m[name] != 'none' and not hasattr(jax.checkpoint_policies, m[name]):
      yield f'model.{name}', f'{m[name]!r} is neither "none" nor a name in jax.checkpoint_policies'
  if m.remat_levels < -1:
    yield 'model.remat_levels', f'{m.remat_levels}: the number of finest levels under model.remat_policy, -1 for all'
  if m.attention not in layers.ATTENTION_IMPLEMENTATIONS:
    yield 'model.attention', f'{m.attention!r} is not one of {layers.ATTENTION_IMPLEMENTATIONS}'
  elif m.attention == 'cudnn' and jax.default_backend() != 'gpu':
    yield 'model.attention', f"'cudnn' needs a GPU; this process runs on {jax.default_backend()!r}"
  if m.temporal_layout not in stunet.TEMPORAL_LAYOUTS:
    yield 'model.temporal_layout', f'{m.temporal_layout!r} is not one of {stunet.TEMPORAL_LAYOUTS}'
  if not 0 <= m.dropout < 1:
    yield 'model.dropout', f'{m.dropout} is outside [0, 1)'
  if m.cond_channels < 0:
    yield 'model.cond_channels', f'{m.cond_channels} must be >= 0'


def _lumiere_errors(config):
  """Our U-Net's rules; returns its level widths."""
  m = config.model
  if len(m.channel_mults) < 1:
    yield 'model.channel_mults', 'needs at least one level'
    return None
  level_sizes = {m.image_size // 2 ** i for i in range(len(m.channel_mults))}
  for res in m.attention_resolutions:
    if res not in level_sizes:
      yield 'model.attention_resolutions', f'{res} is not a level resolution (levels: {sorted(level_sizes)})'
  if config.diffusion.variance != 'fixed':
    yield 'diffusion.variance', f"{config.diffusion.variance!r}: the lumiere backbone predicts no variance; 'fixed'"
  return [m.channels * mult for mult in m.channel_mults]


def _deepfloyd_errors(config):
  """DeepFloyd IF's rules: `model.deepfloyd` builds, and the text it reads is `text.width` wide; returns its level
  widths."""
  m = config.model
  if 'deepfloyd' not in m:
    yield 'model.deepfloyd', "missing: give a backbone preset (configs/lumiere.py:...,backbone=if_i_xl) or convert IF"
    return None
  try:
    out_channels = Parameterization.from_config(config.diffusion).output_channels(m.out_channels)
    unet = IFUNetConfig.from_diffusers({**m.deepfloyd.to_dict(), 'in_channels': m.in_channels + m.cond_channels,
                                        'out_channels': out_channels})
  except ValueError as e:
    yield 'model.deepfloyd', str(e)
    return None
  if config.text.width != unet.text_features:
    yield 'text.width', f'{config.text.width}: the IF U-Net reads text {unet.text_features} wide (encoder_hid_dim)'
  return list(unet.block_out_channels)
