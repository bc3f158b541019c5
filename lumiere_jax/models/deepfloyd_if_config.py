"""The DeepFloyd IF U-Net's architecture, read from a diffusers `UNet2DConditionModel` config.json, and the STUNet
inflation settings for it.

Only what IF's published stage I / II configs use is accepted: any other block type or option is refused with an
error naming the key and value, so a folder either builds exactly the network diffusers would build or fails.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from lumiere_jax.backbones import IF_UNET_DEFAULTS

DOWN_BLOCKS = ('ResnetDownsampleBlock2D', 'SimpleCrossAttnDownBlock2D')
UP_BLOCKS = ('ResnetUpsampleBlock2D', 'SimpleCrossAttnUpBlock2D')
MID_BLOCK = 'UNetMidBlock2DSimpleCrossAttn'
ACTIVATIONS = ('silu', 'swish', 'gelu')

# Keys diffusers accepts that do not change this architecture: the SimpleCrossAttn blocks ignore them
# (upcast_attention too: those blocks always upcast the softmax), or they only matter for other embedding types.
_IGNORED = ('sample_size', 'downsample_padding', 'transformer_layers_per_block', 'reverse_transformer_layers_per_block',
            'dual_cross_attention', 'use_linear_projection', 'projection_class_embeddings_input_dim',
            'addition_time_embed_dim')


def _per_block(value, n: int, key: str) -> tuple:
  values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * n
  if len(values) != n:
    raise ValueError(f'{key}={value!r}: expected one value per block ({n} blocks)')
  return values


def _require(ok: bool, key: str, value, expected: str):
  if not ok:
    raise ValueError(f'unsupported diffusers UNet config {key}={value!r}: {expected}')


@dataclasses.dataclass(frozen=True)
class IFUNetConfig:
  """The IF U-Net's architecture. Per-block tuples follow diffusers' down-block order (level 0 = finest)."""
  in_channels: int
  out_channels: int
  block_out_channels: tuple[int, ...]
  layers_per_block: tuple[int, ...]
  down_block_types: tuple[str, ...]
  up_block_types: tuple[str, ...]
  only_cross_attention: tuple[bool, ...]
  mid_block_only_cross_attention: bool
  attention_head_dim: tuple[int, ...]
  cross_attention_dim: int
  encoder_hid_dim: int | None  # text width before `encoder_hid_proj`; None: the text is already cross_attention_dim
  norm_num_groups: int
  norm_eps: float
  act_fn: str
  time_embed_dim: int
  time_embedding_act_fn: str | None
  flip_sin_to_cos: bool
  freq_shift: float
  class_embed_type: str | None  # None or 'timestep' (stage II's noise-augmentation level)
  addition_embed_type: str | None  # None or 'text' (attention-pooled text added to the time embedding)
  addition_embed_type_num_heads: int
  resnet_time_scale_shift: str  # 'default' (additive) or 'scale_shift'
  resnet_skip_time_act: bool
  resnet_out_scale_factor: float
  mid_block_scale_factor: float
  upcast_attention: bool  # recorded only: the SimpleCrossAttn blocks always compute the softmax in float32
  cross_attention_norm: str | None  # None or 'group_norm' (32 groups over the text width)
  conv_in_kernel: int
  conv_out_kernel: int
  dropout: float

  @property
  def num_levels(self) -> int:
    return len(self.block_out_channels)

  @property
  def text_features(self) -> int:
    """Width of the text the caller passes in."""
    return self.encoder_hid_dim or self.cross_attention_dim

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any]) -> 'IFUNetConfig':
    """Builds the config from a diffusers unet/config.json dict, refusing what this implementation does not build."""
    unknown = sorted(k for k in config if not k.startswith('_') and k not in IF_UNET_DEFAULTS and k not in _IGNORED)
    if unknown:
      raise ValueError(f'unknown diffusers UNet config keys: {unknown}')
    class_name = config.get('_class_name', 'UNet2DConditionModel')
    _require(class_name == 'UNet2DConditionModel', '_class_name', class_name, 'expected UNet2DConditionModel')
    c = {**IF_UNET_DEFAULTS, **{k: v for k, v in config.items() if k in IF_UNET_DEFAULTS}}
    for key, expected in (('center_input_sample', False), ('num_attention_heads', None), ('num_class_embeds', None),
                          ('time_embedding_type', 'positional'), ('timestep_post_act', None),
                          ('time_cond_proj_dim', None), ('attention_type', 'default'),
                          ('class_embeddings_concat', False)):
      _require(c[key] == expected, key, c[key], f'only {expected!r} is supported')
    down, up = tuple(c['down_block_types'] or ()), tuple(c['up_block_types'] or ())
    for key, types, allowed in (('down_block_types', down, DOWN_BLOCKS), ('up_block_types', up, UP_BLOCKS)):
      _require(bool(types) and all(t in allowed for t in types), key, c[key], f'each block one of {allowed}')
    _require(c['mid_block_type'] == MID_BLOCK, 'mid_block_type', c['mid_block_type'], f'only {MID_BLOCK!r}')
    n = len(c['block_out_channels'])
    _require(len(down) == n and len(up) == n, 'down_block_types/up_block_types', (down, up),
             f'one per entry of block_out_channels ({n})')
    for key in ('act_fn', 'time_embedding_act_fn'):
      _require(c[key] in ACTIVATIONS or (key == 'time_embedding_act_fn' and c[key] is None), key, c[key],
               f'one of {ACTIVATIONS}')
    _require(c['class_embed_type'] in (None, 'timestep'), 'class_embed_type', c['class_embed_type'],
             "None or 'timestep'")
    _require(c['addition_embed_type'] in (None, 'text'), 'addition_embed_type', c['addition_embed_type'],
             "None or 'text'")
    _require(c['encoder_hid_dim_type'] in (None, 'text_proj'), 'encoder_hid_dim_type', c['encoder_hid_dim_type'],
             "None or 'text_proj'")
    _require(c['encoder_hid_dim_type'] is None or c['encoder_hid_dim'] is not None, 'encoder_hid_dim',
             c['encoder_hid_dim'], 'required with encoder_hid_dim_type')
    _require(c['resnet_time_scale_shift'] in ('default', 'scale_shift'), 'resnet_time_scale_shift',
             c['resnet_time_scale_shift'], "'default' or 'scale_shift'")
    _require(c['cross_attention_norm'] in (None, 'group_norm'), 'cross_attention_norm', c['cross_attention_norm'],
             "None or 'group_norm'")
    _require(isinstance(c['cross_attention_dim'], int), 'cross_attention_dim', c['cross_attention_dim'],
             'a single int')
    _require(isinstance(c['norm_num_groups'], int), 'norm_num_groups', c['norm_num_groups'], 'an int')
    for key in ('conv_in_kernel', 'conv_out_kernel'):
      _require(c[key] % 2 == 1, key, c[key], 'an odd kernel size')
    only_cross = c['only_cross_attention']
    mid_only_cross = c['mid_block_only_cross_attention']
    if mid_only_cross is None:
      mid_only_cross = only_cross if isinstance(only_cross, bool) else False
    widths = tuple(int(w) for w in c['block_out_channels'])
    return cls(
        in_channels=int(c['in_channels']), out_channels=int(c['out_channels']), block_out_channels=widths,
        layers_per_block=tuple(int(v) for v in _per_block(c['layers_per_block'], n, 'layers_per_block')),
        down_block_types=down, up_block_types=up,
        only_cross_attention=tuple(bool(v) for v in _per_block(only_cross, n, 'only_cross_attention')),
        mid_block_only_cross_attention=bool(mid_only_cross),
        attention_head_dim=tuple(int(v) for v in _per_block(c['attention_head_dim'], n, 'attention_head_dim')),
        cross_attention_dim=int(c['cross_attention_dim']),
        encoder_hid_dim=None if c['encoder_hid_dim'] is None else int(c['encoder_hid_dim']),
        norm_num_groups=int(c['norm_num_groups']), norm_eps=float(c['norm_eps']), act_fn=c['act_fn'],
        time_embed_dim=int(c['time_embedding_dim'] or 4 * widths[0]),
        time_embedding_act_fn=c['time_embedding_act_fn'], flip_sin_to_cos=bool(c['flip_sin_to_cos']),
        freq_shift=float(c['freq_shift']), class_embed_type=c['class_embed_type'],
        addition_embed_type=c['addition_embed_type'],
        addition_embed_type_num_heads=int(c['addition_embed_type_num_heads']),
        resnet_time_scale_shift=c['resnet_time_scale_shift'], resnet_skip_time_act=bool(c['resnet_skip_time_act']),
        resnet_out_scale_factor=float(c['resnet_out_scale_factor']),
        mid_block_scale_factor=float(c['mid_block_scale_factor']), upcast_attention=bool(c['upcast_attention']),
        cross_attention_norm=c['cross_attention_norm'], conv_in_kernel=int(c['conv_in_kernel']),
        conv_out_kernel=int(c['conv_out_kernel']), dropout=float(c['dropout']))


@dataclasses.dataclass(frozen=True)
class Inflation:
  """STUNet settings for inflating the IF U-Net (DESIGN section 1).

  temporal_downsample: one flag per spatial resize (num_levels - 1); a set flag halves the frames after that level's
  spatial downsampler and doubles them after the matching upsampler. temporal_attention_depth: TemporalAttention
  blocks after the mid block (0: (2+1)D conv inflation at every level, as in the SSR). num_heads / norm_groups: of
  the temporal blocks.
  """
  temporal_downsample: tuple[bool, ...]
  temporal_attention_depth: int
  num_heads: int
  norm_groups: int

  @property
  def temporal_factor(self) -> int:
    return 2 ** sum(bool(flag) for flag in self.temporal_downsample)
