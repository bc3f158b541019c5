"""The DeepFloyd IF U-Net in NNX, channels-last; built with an `Inflation` it is IF's STUNet.

    conv_in -> down_blocks: layers (resnet [+ attention] [+ temporal]), resnet downsampler [+ temporal_downsample]
    -> mid_block: resnet, attention, resnet [+ temporal attention stack]
    -> up_blocks: layers on skip concatenations, resnet upsampler [+ temporal_upsample] -> norm / act / conv_out

The spatial part is diffusers' `UNet2DConditionModel` as IF configures it, attribute for attribute (see
`deepfloyd_if_blocks`); bracketed parts are the STUNet's temporal modules (`lumiere_jax.models.stunet`), placed by
the same rules as in `unet.py`, under attribute names starting with `temporal`. They draw from their own rngs
stream, so the spatial parameters (paths and init) are the same with or without them.

The temporal blocks are conditioned on IF's time embedding as the resnets see it (timestep + noise-augmentation
level + pooled text, after `time_embedding_act_fn`) and read the projected text (`encoder_hid_proj` output) with
the text mask.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lumiere_jax.models import layers, stunet
from lumiere_jax.models.deepfloyd_if_blocks import (AddedKVAttention, ResnetBlock, TextTimeEmbedding,
                                                    TimestepEmbedding, activation, group_norm, timestep_features)
from lumiere_jax.models.deepfloyd_if_config import IFUNetConfig, Inflation
from lumiere_jax.models.unet import Cond

__all__ = ['IFUNet', 'IFUNetConfig', 'Inflation']


def _temporal(remat: str, block: nnx.Module, h: jax.Array, cond: Cond) -> jax.Array:
  text = (cond.text, cond.text_mask) if isinstance(block, stunet.TemporalAttention) else ()
  return layers.checkpoint(remat, block, h, cond.emb, *text, frames=cond.frames)


class _Block(nnx.Module):
  """The layers of one resolution: resnet, then attention (SimpleCrossAttn blocks), then the temporal block."""

  def __init__(self, resnets, attentions, temporal, remat: str):
    self.resnets = nnx.List(resnets)
    self.attentions = nnx.List(attentions) if attentions else None
    self.temporal = nnx.List(temporal)
    self.remat = remat

  def _layer(self, i: int, h: jax.Array, cond: Cond) -> jax.Array:
    h = layers.checkpoint(self.remat, self.resnets[i], h, cond.emb, cond.rngs)
    if self.attentions is not None:
      h = layers.checkpoint(self.remat, self.attentions[i], h, cond.text, cond.text_mask, frames=cond.frames)
    if self.temporal:
      h = _temporal(self.remat, self.temporal[i], h, cond)
    return h

  def _resize(self, resnet: nnx.Module, temporal_resize: nnx.Module | None, h: jax.Array,
              cond: Cond) -> tuple[jax.Array, Cond]:
    h = layers.checkpoint(self.remat, resnet, h, cond.emb, cond.rngs)
    if temporal_resize is not None:
      h = temporal_resize(h, frames=cond.frames)
      cond = cond.with_frames(h.shape[0] // cond.clip_emb.shape[0])
    return h, cond


class DownBlock(_Block):
  """ResnetDownsampleBlock2D / SimpleCrossAttnDownBlock2D."""

  def __init__(self, resnets, attentions, temporal, downsampler, temporal_downsample, remat: str):
    super().__init__(resnets, attentions, temporal, remat)
    self.downsamplers = nnx.List([downsampler]) if downsampler is not None else None
    self.temporal_downsample = temporal_downsample

  def __call__(self, h: jax.Array, cond: Cond) -> tuple[jax.Array, Cond, list[jax.Array]]:
    skips = []
    for i in range(len(self.resnets)):
      h = self._layer(i, h, cond)
      skips.append(h)
    if self.downsamplers is not None:
      h, cond = self._resize(self.downsamplers[0], self.temporal_downsample, h, cond)
      skips.append(h)
    return h, cond, skips


class UpBlock(_Block):
  """ResnetUpsampleBlock2D / SimpleCrossAttnUpBlock2D: each layer reads the last skip concatenated to its input."""

  def __init__(self, resnets, attentions, temporal, upsampler, temporal_upsample, remat: str):
    super().__init__(resnets, attentions, temporal, remat)
    self.upsamplers = nnx.List([upsampler]) if upsampler is not None else None
    self.temporal_upsample = temporal_upsample

  def __call__(self, h: jax.Array, skips: list[jax.Array], cond: Cond) -> tuple[jax.Array, Cond]:
    for i in range(len(self.resnets)):
      h = self._layer(i, jnp.concatenate([h, skips.pop()], axis=-1), cond)
    if self.upsamplers is not None:
      h, cond = self._resize(self.upsamplers[0], self.temporal_upsample, h, cond)
    return h, cond


class MidBlock(nnx.Module):
  """UNetMidBlock2DSimpleCrossAttn (resnet, attention, resnet), then the STUNet's temporal attention stack."""

  def __init__(self, resnets, attention, temporal, remat: str):
    self.resnets = nnx.List(resnets)
    self.attentions = nnx.List([attention])
    self.temporal = nnx.List(temporal)
    self.remat = remat

  def __call__(self, h: jax.Array, cond: Cond) -> jax.Array:
    h = layers.checkpoint(self.remat, self.resnets[0], h, cond.emb, cond.rngs)
    h = layers.checkpoint(self.remat, self.attentions[0], h, cond.text, cond.text_mask, frames=cond.frames)
    h = layers.checkpoint(self.remat, self.resnets[1], h, cond.emb, cond.rngs)
    for block in self.temporal:
      h = _temporal(self.remat, block, h, cond)
    return h


class IFUNet(nnx.Module):
  """(B, T, H, W, C) noisy video, timesteps (B,), text (B, L, D) + mask (B, L) -> (B, T, H, W, out_channels) float32.

  IF's outputs are epsilon then the learned-range variance values. `conditioning` (B, T, H, W, C_cond) is
  concatenated to x (stage II's upsampled low-res clip; `in_channels` counts it); `class_labels` (B,) is stage II's
  noise-augmentation timestep (class_embed_type='timestep'). The text mask acts as diffusers'
  `encoder_attention_mask`: an additive -10000 on the masked text keys of the spatial attentions (the attention
  pooling of `add_embedding` reads every token, as in diffusers; IF's pipelines pass no mask, which an all-True mask
  reproduces). Without `inflation` the frames are independent images; with it, T must be divisible by
  `inflation.temporal_factor`. `execution` holds `layers.Execution`'s fields (attention kernel, temporal layout,
  remat policy per level), e.g. `**dataclasses.asdict(layers.Execution.from_model_config(config.model))`.
  """

  def __init__(self, cfg: IFUNetConfig, *, dtype, inflation: Inflation | None = None, rngs: nnx.Rngs, **execution):
    # Temporal modules draw from their own stream, so the spatial init is the same with or without them.
    temporal_rngs = nnx.Rngs(rngs.params())
    dtype = jnp.dtype(dtype)
    run = layers.Execution(**execution)
    widths, n, emb = cfg.block_out_channels, cfg.num_levels, cfg.time_embed_dim
    if inflation is not None and len(inflation.temporal_downsample) != n - 1:
      raise ValueError(f'inflation.temporal_downsample={inflation.temporal_downsample}: expected one flag per '
                       f'spatial resize ({n - 1})')
    flags = [bool(f) for f in inflation.temporal_downsample] if inflation else [False] * (n - 1)
    self.cfg = cfg
    self.spatial_factor = 2 ** (n - 1)
    self.temporal_factor = 2 ** sum(flags)
    kw = dict(dtype=dtype, rngs=rngs)
    self.conv_in = layers.conv(cfg.in_channels, widths[0], kernel_size=cfg.conv_in_kernel, **kw)
    self.time_embedding = TimestepEmbedding(widths[0], emb, cfg.act_fn, **kw)
    self.encoder_hid_proj = (layers.dense(cfg.encoder_hid_dim, cfg.cross_attention_dim, **kw)
                             if cfg.encoder_hid_dim else None)
    self.class_embedding = (TimestepEmbedding(widths[0], emb, cfg.act_fn, **kw) if cfg.class_embed_type == 'timestep'
                            else None)
    self.add_embedding = (TextTimeEmbedding(cfg.text_features, emb, cfg.addition_embed_type_num_heads, **kw)
                          if cfg.addition_embed_type == 'text' else None)

    def resnet(c_in, c_out, resample=None, scale=cfg.resnet_out_scale_factor):
      return ResnetBlock(c_in, c_out, cfg, resample=resample, output_scale_factor=scale, **kw)

    def temporal(level, features, count):
      """Temporal attention at the coarsest level, (2+1)D inflation elsewhere (everywhere with depth 0)."""
      if inflation is None:
        return []
      if level == n - 1 and inflation.temporal_attention_depth > 0:
        return [stunet.TemporalAttention(features, emb, cfg.cross_attention_dim, num_heads=inflation.num_heads,
                                         dtype=dtype, rngs=temporal_rngs, attention=run.attention,
                                         layout=run.temporal_layout) for _ in range(count)]
      return [stunet.ConvInflation(features, emb, groups=inflation.norm_groups, dtype=dtype, rngs=temporal_rngs,
                                   layout=run.temporal_layout) for _ in range(count)]

    def attentions(block_type, features, head_dim, only_cross, count):
      if not block_type.startswith('SimpleCrossAttn'):
        return None
      return [AddedKVAttention(features, head_dim, cfg, only_cross_attention=only_cross, attention=run.attention, **kw)
              for _ in range(count)]

    down = []
    for i, width in enumerate(widths):
      count, last = cfg.layers_per_block[i], i == n - 1
      down.append(DownBlock(
          [resnet(widths[max(i - 1, 0)] if j == 0 else width, width) for j in range(count)],
          attentions(cfg.down_block_types[i], width, cfg.attention_head_dim[i], cfg.only_cross_attention[i], count),
          temporal(i, width, count), None if last else resnet(width, width, 'down'),
          stunet.TemporalDownsample(width, dtype=dtype, rngs=temporal_rngs, layout=run.temporal_layout)
          if not last and flags[i] else None,
          run.remat_at(i)))
    self.down_blocks = nnx.List(down)
    width, depth = widths[-1], inflation.temporal_attention_depth if inflation else 0
    self.mid_block = MidBlock(
        [resnet(width, width, scale=cfg.mid_block_scale_factor) for _ in range(2)],
        AddedKVAttention(width, cfg.attention_head_dim[-1], cfg,
                         only_cross_attention=cfg.mid_block_only_cross_attention, attention=run.attention, **kw),
        [stunet.TemporalAttention(width, emb, cfg.cross_attention_dim, num_heads=inflation.num_heads, dtype=dtype,
                                  rngs=temporal_rngs, attention=run.attention, layout=run.temporal_layout)
         for _ in range(depth)],
        run.remat_at(n - 1))
    up, prev = [], widths[-1]
    for j in range(n):
      level = n - 1 - j
      width, skip_in, count = widths[level], widths[max(level - 1, 0)], cfg.layers_per_block[level] + 1
      up.append(UpBlock(
          [resnet((prev if k == 0 else width) + (skip_in if k == count - 1 else width), width) for k in range(count)],
          # diffusers indexes the up blocks' head dims in down-block order (not reversed); so do we.
          attentions(cfg.up_block_types[j], width, cfg.attention_head_dim[j], cfg.only_cross_attention[level], count),
          temporal(level, width, count), resnet(width, width, 'up') if level else None,
          stunet.TemporalUpsample(width, dtype=dtype, rngs=temporal_rngs, layout=run.temporal_layout)
          if level and flags[level - 1] else None,
          run.remat_at(level)))
      prev = width
    self.up_blocks = nnx.List(up)
    self.conv_norm_out = group_norm(widths[0], cfg.norm_num_groups, cfg.norm_eps, **kw)
    self.conv_out = layers.conv(widths[0], cfg.out_channels, kernel_size=cfg.conv_out_kernel, **kw)

  def _check_inputs(self, x: jax.Array, text: jax.Array, class_labels: jax.Array | None):
    _, frames, height, width, channels = x.shape
    if channels != self.cfg.in_channels:
      raise ValueError(f'the input has {channels} channels (noisy video + conditioning); in_channels='
                       f'{self.cfg.in_channels}')
    if frames % self.temporal_factor:
      raise ValueError(f'num_frames={frames} is not divisible by the temporal downsampling factor '
                       f'{self.temporal_factor}')
    for name, size in (('height', height), ('width', width)):
      if size % self.spatial_factor:
        raise ValueError(f'{name}={size} is not divisible by {self.spatial_factor} = 2**(spatial downsamplings)')
    if text.shape[-1] != self.cfg.text_features:
      raise ValueError(f'text width {text.shape[-1]}; the model reads {self.cfg.text_features}')
    if (class_labels is None) != (self.class_embedding is None):
      raise ValueError("class_labels (the noise-augmentation timestep) are required exactly when "
                       f"class_embed_type='timestep' (here {self.cfg.class_embed_type!r})")

  def embedding(self, timesteps: jax.Array, text: jax.Array, class_labels: jax.Array | None) -> jax.Array:
    """The conditioning vector (B, E) every resnet and temporal block reads."""
    cfg, dtype = self.cfg, self.conv_in.dtype

    def features(t):
      t = jnp.broadcast_to(t, text.shape[:1])
      return timestep_features(t, cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos,
                               freq_shift=cfg.freq_shift).astype(dtype)

    emb = self.time_embedding(features(timesteps))
    if self.class_embedding is not None:
      emb = emb + self.class_embedding(features(class_labels))
    if self.add_embedding is not None:
      emb = emb + self.add_embedding(text.astype(dtype))
    return emb if cfg.time_embedding_act_fn is None else activation(cfg.time_embedding_act_fn)(emb)

  def __call__(self, x: jax.Array, timesteps: jax.Array, text: jax.Array, text_mask: jax.Array, *,
               conditioning: jax.Array | None = None, class_labels: jax.Array | None = None,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    if conditioning is not None:
      x = jnp.concatenate([x, conditioning.astype(x.dtype)], axis=-1)
    self._check_inputs(x, text, class_labels)
    batch, frames, height, width, _ = x.shape
    emb = self.embedding(timesteps, text, class_labels)
    context = text if self.encoder_hid_proj is None else self.encoder_hid_proj(text)
    cond = Cond(emb, context, text_mask.astype(bool), rngs).with_frames(frames)
    h = self.conv_in(x.reshape(batch * frames, height, width, -1))
    skips = [h]
    for block in self.down_blocks:
      h, cond, block_skips = block(h, cond)
      skips.extend(block_skips)
    h = self.mid_block(h, cond)
    for block in self.up_blocks:
      h, cond = block(h, skips, cond)
    h = self.conv_out(activation(self.cfg.act_fn)(self.conv_norm_out(h)))
    return h.reshape(batch, frames, height, width, -1).astype(jnp.float32)
