"""The spatial (T2I) U-Net, Imagen-like and channels-last; built with `inflate=True` it is the STUNet.

    conv_in -> down levels: layers (res block [+ attention] [+ temporal]), spatial downsample [+ temporal downsample]
    -> middle: (res, attention), (res [+ temporal attention stack])
    -> up levels: layers on skip concatenations (num_res_blocks + 1), spatial upsample [+ temporal upsample]
    -> GroupNorm / SiLU / conv_out

Bracketed parts (`lumiere_jax.models.stunet`) exist only in the STUNet, under attribute names starting with
`temporal`; the spatial attribute names are the same either way, so T2I parameters load into the STUNet by path.
Spatial layers see frames folded into batch (B*T_l, H, W, C) with the conditioning vector broadcast to B*T_l; frame
counts are static Python ints per level.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from lumiere_jax.models import layers, stunet


class Cond(NamedTuple):
  """What every layer is conditioned on, at the current level's frame count."""
  clip_emb: jax.Array  # (B, E): noise level + pooled caption, one per clip
  text: jax.Array  # (B, L, D) caption embeddings
  text_mask: jax.Array  # (B, L) bool
  rngs: nnx.Rngs | None  # dropout randomness; None = deterministic
  temporal_clip_emb: jax.Array | None = None  # (B, E): the temporal layers' own, STUNet only (UNet docstring)
  frames: int = 0
  emb: jax.Array | None = None  # (B*frames, E): clip_emb broadcast over the frames
  temporal_emb: jax.Array | None = None  # (B*frames, E): temporal_clip_emb broadcast over the frames

  def with_frames(self, frames: int) -> 'Cond':
    def per_frame(clip_emb):
      return None if clip_emb is None else jnp.repeat(clip_emb, frames, axis=0)
    return self._replace(frames=frames, emb=per_frame(self.clip_emb), temporal_emb=per_frame(self.temporal_clip_emb))


class NoiseEmbedding(nnx.Module):
  """logsnr (B,) -> (B, E) via the cosine-schedule time c = arctan(exp(-logsnr/2)) * 2/pi in [0, 1].

  c is a function of logsnr alone, so the embedding does not depend on a shift of the schedule.
  """

  def __init__(self, features: int, emb_features: int, *, dtype, rngs: nnx.Rngs):
    self.features = features
    self.hidden = layers.dense(features, emb_features, dtype=dtype, rngs=rngs)
    self.out = layers.dense(emb_features, emb_features, dtype=dtype, rngs=rngs)

  def __call__(self, logsnr: jax.Array) -> jax.Array:
    c = jnp.arctan(jnp.exp(-0.5 * logsnr.astype(jnp.float32))) * (2 / jnp.pi)
    return self.out(nnx.silu(self.hidden(layers.sinusoidal(1000.0 * c, self.features))))


class Downsample(nnx.Module):
  """Stride-2 3x3 conv: (N, H, W, C) -> (N, H/2, W/2, C)."""

  def __init__(self, features: int, *, dtype, rngs: nnx.Rngs):
    self.conv = layers.conv(features, features, strides=2, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(x)


class Upsample(nnx.Module):
  """Nearest-neighbour x2 then a 3x3 conv: (N, H, W, C) -> (N, 2H, 2W, C)."""

  def __init__(self, features: int, *, dtype, rngs: nnx.Rngs):
    self.conv = layers.conv(features, features, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class Layer(nnx.Module):
  """A residual block, then spatial attention where the level asks for it, then the STUNet's temporal blocks.

  `temporal` names the temporal blocks ('conv': (2+1)D inflation, 'attention': temporal self-attention); empty in
  the T2I model. Each block call is rematerialised under the remat policy of the layer's `level` (`execution`).
  """

  def __init__(self, in_features: int, features: int, *, attend: bool, temporal: tuple[str, ...], model_config,
               emb_features: int, text_features: int, dtype, rngs: nnx.Rngs, temporal_rngs: nnx.Rngs, level: int,
               execution: layers.Execution):
    m = model_config
    self.remat = execution.remat_at(level)
    self.res = layers.ResBlock(in_features, features, emb_features, groups=m.norm_groups, dropout=m.dropout,
                               dtype=dtype, rngs=rngs)
    self.attn = (layers.SpatialAttention(features, text_features, num_heads=m.num_heads, groups=m.norm_groups,
                                         dtype=dtype, rngs=rngs, attention=execution.attention) if attend else None)
    blocks = dict(
        conv=lambda: stunet.ConvInflation(features, emb_features, groups=m.norm_groups, dtype=dtype,
                                          rngs=temporal_rngs, layout=execution.temporal_layout),
        attention=lambda: stunet.TemporalAttention(features, emb_features, text_features, num_heads=m.num_heads,
                                                   dtype=dtype, rngs=temporal_rngs, attention=execution.attention,
                                                   layout=execution.temporal_layout))
    self.temporal = nnx.List([blocks[kind]() for kind in temporal])

  def __call__(self, x: jax.Array, cond: Cond) -> jax.Array:
    x = layers.checkpoint(self.remat, self.res, x, cond.emb, cond.rngs)
    if self.attn is not None:
      x = layers.checkpoint(self.remat, self.attn, x, cond.text, cond.text_mask, frames=cond.frames)
    for block in self.temporal:
      text = (cond.text, cond.text_mask) if isinstance(block, stunet.TemporalAttention) else ()
      x = layers.checkpoint(self.remat, block, x, cond.temporal_emb, *text, frames=cond.frames)
    return x


class Level(nnx.Module):
  """One resolution: its layers, then the resize to the next one (spatial, then temporal in the STUNet)."""

  def __init__(self, level_layers: list[Layer], resize: nnx.Module | None, temporal_resize: nnx.Module | None):
    self.layers = nnx.List(level_layers)
    self.resize = resize
    self.temporal_resize = temporal_resize

  def resample(self, x: jax.Array, cond: Cond) -> tuple[jax.Array, Cond]:
    if self.resize is not None:
      x = self.resize(x)
    if self.temporal_resize is not None:
      x = self.temporal_resize(x, frames=cond.frames)
      cond = cond.with_frames(x.shape[0] // cond.clip_emb.shape[0])
    return x, cond


class UNet(nnx.Module):
  """(B, T, H, W, C_in) noisy video, logsnr (B,), text (B, L, D) + mask (B, L) -> (B, T, H, W, C_out) float32.

  The T2I model (inflate=False) treats the T frames independently; the STUNet needs T divisible by
  `stunet.temporal_downsample_factor`. With `model.cond_channels` > 0 a conditioning video (B, T, H, W, C_cond) is
  concatenated to the noisy input (super-resolution: the upsampled low-res clip; the conditional stage: the masked
  video and its mask); with `model.cond_noise_level` its noise-augmentation log-SNR (B,) is embedded like the
  denoising noise level and added to the conditioning vector. How it runs (attention kernel, temporal layout, remat
  per level) is `layers.Execution.from_model_config(model_config)`; traced under a mesh with a `context` axis, the
  clip's frames are split over it (`stunet.shard_frames`).

  The STUNet's temporal layers are conditioned on the noise level plus their own trainable projection of the pooled
  caption (`temporal_text_embed`, our choice: the paper does not say). The spatial `text_embed` was trained on single
  frames, where words about motion carry no signal, and stays frozen; without a trainable caption path into the
  temporal blocks' FiLM, the frozen-spatial model learns the sign of a motion but hardly its axis (BENCHMARKS.md,
  "Demo", session 9).
  """

  def __init__(self, model_config, text_features: int, *, inflate: bool, rngs: nnx.Rngs):
    m = model_config
    # Temporal modules draw from their own stream, so the spatial init is the same with or without them.
    temporal_rngs = nnx.Rngs(rngs.params())
    dtype = jnp.dtype(m.dtype)
    execution = layers.Execution.from_model_config(m)
    widths = [m.channels * mult for mult in m.channel_mults]
    num_levels, emb = len(widths), 4 * m.channels
    flags = [inflate and bool(flag) for flag in m.temporal_downsample]
    self.spatial_factor = 2 ** (num_levels - 1)
    self.temporal_factor = 2 ** sum(flags)
    self.noise_embed = NoiseEmbedding(m.channels, emb, dtype=dtype, rngs=rngs)
    self.text_embed = layers.dense(text_features, emb, dtype=dtype, rngs=rngs)
    self.temporal_text_embed = layers.dense(text_features, emb, dtype=dtype, rngs=temporal_rngs) if inflate else None
    self.conv_in = layers.conv(m.in_channels + m.cond_channels, m.channels, dtype=dtype, rngs=rngs)
    self.cond_channels = m.cond_channels
    self.cond_noise_embed = (NoiseEmbedding(m.channels, emb, dtype=dtype, rngs=rngs) if m.cond_noise_level
                             else None)

    def layer(in_features, features, *, level, attend, temporal):
      return Layer(in_features, features, attend=attend, temporal=temporal if inflate else (), model_config=m,
                   emb_features=emb, text_features=text_features, dtype=dtype, rngs=rngs,
                   temporal_rngs=temporal_rngs, level=level, execution=execution)

    def level_layer(in_features, level):
      """Attention by resolution; temporal attention at the coarsest level, (2+1)D inflation elsewhere (everywhere
      with `temporal_attention_depth=0`, as in the SSR)."""
      coarsest_attention = level == num_levels - 1 and m.temporal_attention_depth > 0
      return layer(in_features, widths[level], level=level,
                   attend=m.image_size // 2 ** level in m.attention_resolutions,
                   temporal=('attention',) if coarsest_attention else ('conv',))

    ch, skips, down = m.channels, [m.channels], []
    for i, width in enumerate(widths):
      level_layers = []
      for _ in range(m.num_res_blocks):
        level_layers.append(level_layer(ch, i))
        ch = width
        skips.append(ch)
      last = i == num_levels - 1
      down.append(Level(level_layers, None if last else Downsample(ch, dtype=dtype, rngs=rngs),
                        stunet.TemporalDownsample(ch, dtype=dtype, rngs=temporal_rngs,
                                                  layout=execution.temporal_layout)
                        if not last and flags[i] else None))
      if not last:
        skips.append(ch)
    self.down = nnx.List(down)
    coarsest = num_levels - 1
    self.middle = nnx.List([layer(ch, ch, level=coarsest, attend=True, temporal=()),
                            layer(ch, ch, level=coarsest, attend=False,
                                  temporal=('attention',) * m.temporal_attention_depth)])
    up = []
    for i in reversed(range(num_levels)):
      level_layers = []
      for _ in range(m.num_res_blocks + 1):
        level_layers.append(level_layer(ch + skips.pop(), i))
        ch = widths[i]
      up.append(Level(level_layers, Upsample(ch, dtype=dtype, rngs=rngs) if i else None,
                      stunet.TemporalUpsample(ch, dtype=dtype, rngs=temporal_rngs, layout=execution.temporal_layout)
                      if i and flags[i - 1] else None))
    self.up = nnx.List(up)
    self.norm_out = layers.group_norm(ch, m.norm_groups, dtype=dtype, rngs=rngs)
    self.conv_out = layers.conv(ch, m.out_channels, dtype=dtype, rngs=rngs)

  def _with_conditioning(self, x: jax.Array, conditioning: jax.Array | None) -> jax.Array:
    """x with the conditioning channels appended (checked against `model.cond_channels`)."""
    if conditioning is None:
      if self.cond_channels:
        raise ValueError(f'model.cond_channels={self.cond_channels}: the model needs a conditioning video')
      return x
    if conditioning.shape != (*x.shape[:-1], self.cond_channels):
      raise ValueError(f'conditioning of shape {conditioning.shape}; expected {(*x.shape[:-1], self.cond_channels)} '
                       f'(the noisy input {x.shape} with model.cond_channels={self.cond_channels})')
    return jnp.concatenate([x, conditioning.astype(x.dtype)], axis=-1)

  def _check_shape(self, frames: int, height: int, width: int):
    if frames % self.temporal_factor:
      raise ValueError(f'num_frames={frames} is not divisible by {self.temporal_factor}, the temporal '
                       'downsampling factor (2**number of True flags in model.temporal_downsample)')
    for name, size in (('height', height), ('width', width)):
      if size % self.spatial_factor:
        raise ValueError(f'{name}={size} is not divisible by {self.spatial_factor} = 2**(spatial downsamplings)')

  def __call__(self, x: jax.Array, logsnr: jax.Array, text: jax.Array, text_mask: jax.Array, *,
               conditioning: jax.Array | None = None, conditioning_level: jax.Array | None = None,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    batch, frames, height, width, _ = x.shape
    self._check_shape(frames, height, width)
    x = stunet.shard_frames(self._with_conditioning(x, conditioning))
    text_mask = text_mask.astype(bool)
    counts = jnp.maximum(text_mask.sum(axis=1, keepdims=True), 1)
    pooled = jnp.where(text_mask[..., None], text, 0).astype(jnp.float32).sum(axis=1) / counts
    clip_emb = self.noise_embed(logsnr) + self.text_embed(pooled)
    if self.cond_noise_embed is not None:
      if conditioning_level is None:
        raise ValueError('model.cond_noise_level is set: give conditioning_level, the noise level of the conditioning')
      clip_emb = clip_emb + self.cond_noise_embed(conditioning_level)
    temporal_clip_emb = None if self.temporal_text_embed is None else clip_emb + self.temporal_text_embed(pooled)
    cond = Cond(clip_emb, text, text_mask, rngs, temporal_clip_emb).with_frames(frames)

    h = self.conv_in(x.reshape(batch * frames, height, width, -1))
    skips = [h]
    for level in self.down:
      for layer in level.layers:
        h = layer(h, cond)
        skips.append(h)
      if level.resize is not None:
        h, cond = level.resample(h, cond)
        skips.append(h)
    for layer in self.middle:
      h = layer(h, cond)
    for level in self.up:
      for layer in level.layers:
        h = layer(jnp.concatenate([h, skips.pop()], axis=-1), cond)
      h, cond = level.resample(h, cond)
    h = self.conv_out(nnx.silu(self.norm_out(h)))
    return stunet.shard_frames(h.reshape(batch, frames, height, width, -1)).astype(jnp.float32)
