"""The STUNet's temporal modules (DESIGN section 1): resamplers, (2+1)D conv inflation, temporal self-attention.

The U-Net inserts them next to its spatial blocks when built with `inflate=True`. Activations arrive in the spatial
layout (B*T, H, W, C); the temporal operations run on pixels folded into batch, (B*H*W, T, C). Initialisation makes
the inflated model start as the T2I model: resampling convs pass frames through (identity centre tap), and the
inflation and attention blocks end in zero-initialised projections, so they start as the identity.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from lumiere_jax.models import layers


def temporal_downsample_factor(model_config) -> int:
  """Clip lengths must be multiples of this: 2 ** (number of temporal downsamplings)."""
  return 2 ** sum(bool(flag) for flag in model_config.temporal_downsample)


def over_time(fn: Callable[[jax.Array], jax.Array], x: jax.Array, frames: int) -> jax.Array:
  """Applies `fn` on (B*H*W, T, C) to x in the spatial layout (B*T, H, W, C); `fn` may change T and C."""
  n, height, width, c = x.shape
  batch = n // frames
  y = x.reshape(batch, frames, height, width, c).transpose(0, 2, 3, 1, 4).reshape(-1, frames, c)
  y = fn(y)
  y = y.reshape(batch, height, width, *y.shape[1:]).transpose(0, 3, 1, 2, 4)
  return y.reshape(-1, height, width, y.shape[-1])


class TemporalDownsample(nnx.Module):
  """Kernel-3 temporal conv with stride 2, identity-initialised: at init it keeps frames 0, 2, 4, ..."""

  def __init__(self, features: int, *, dtype, rngs: nnx.Rngs):
    self.conv = layers.temporal_conv(features, strides=2, identity_init=True, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, frames: int) -> jax.Array:
    """(B*T, H, W, C) -> (B*T/2, H, W, C)."""
    return over_time(self.conv, x, frames)


class TemporalUpsample(nnx.Module):
  """Frame duplication then an identity-initialised kernel-3 temporal conv: at init, nearest-neighbour upsampling."""

  def __init__(self, features: int, *, dtype, rngs: nnx.Rngs):
    self.conv = layers.temporal_conv(features, identity_init=True, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, frames: int) -> jax.Array:
    """(B*T, H, W, C) -> (B*2T, H, W, C)."""
    return over_time(lambda y: self.conv(jnp.repeat(y, 2, axis=1)), x, frames)


class ConvInflation(nnx.Module):
  """Factorised (2+1)D residual block: x + proj(temporal_conv(FiLM(spatial_conv(x)))), projection zero-initialised.

  FiLM from the conditioning vector inside the branch (our choice; the paper does not say) lets the temporal layers
  see the noise level and the caption.
  """

  def __init__(self, features: int, emb_features: int, *, groups: int, dtype, rngs: nnx.Rngs):
    self.norm_in = layers.group_norm(features, groups, dtype=dtype, rngs=rngs)
    self.space_conv = layers.conv(features, features, dtype=dtype, rngs=rngs)
    self.norm_mid = layers.group_norm(features, groups, dtype=dtype, rngs=rngs)
    self.film = layers.dense(emb_features, 2 * features, dtype=dtype, rngs=rngs)
    self.time_conv = layers.temporal_conv(features, dtype=dtype, rngs=rngs)
    self.proj = layers.dense(features, features, dtype=dtype, rngs=rngs, zero_init=True)

  def __call__(self, x: jax.Array, emb: jax.Array, *, frames: int) -> jax.Array:
    """x (B*T, H, W, C), emb (B*T, E)."""
    h = self.space_conv(nnx.silu(self.norm_in(x)))
    h = nnx.silu(layers.film(self.norm_mid(h), self.film(nnx.silu(emb))))
    h = over_time(self.time_conv, h, frames)
    return x + self.proj(nnx.silu(h))


class TemporalAttention(nnx.Module):
  """Temporal self-attention, then cross-attention to the caption; both residual with zero-initialised outputs.

  Self-attention runs over the frames of each pixel: x + attn(FiLM(norm(x)) + sinusoidal frame position). The
  cross-attention is our addition (the paper does not say): the spatial layers that read the caption are frozen and
  were trained on single frames, where words about motion carry no signal, so the trainable temporal stack needs its
  own view of the caption to follow "moving left" rather than some motion.
  """

  def __init__(self, features: int, emb_features: int, text_features: int, *, num_heads: int, dtype,
               rngs: nnx.Rngs):
    self.norm = layers.layer_norm(features, dtype=dtype, rngs=rngs)
    self.film = layers.dense(emb_features, 2 * features, dtype=dtype, rngs=rngs)
    self.attn = layers.Attention(features, features, num_heads, dtype=dtype, rngs=rngs, zero_out=True)
    self.cross_norm = layers.layer_norm(features, dtype=dtype, rngs=rngs)
    self.cross_attn = layers.Attention(features, text_features, num_heads, dtype=dtype, rngs=rngs, zero_out=True)

  def __call__(self, x: jax.Array, emb: jax.Array, text: jax.Array, text_mask: jax.Array, *,
               frames: int) -> jax.Array:
    """x (B*T, H, W, C), emb (B*T, E); text (B, L, D) and text_mask (B, L) per clip."""
    h = layers.film(self.norm(x), self.film(nnx.silu(emb)))

    def attend(y):
      y = y + layers.sinusoidal(jnp.arange(frames), y.shape[-1]).astype(y.dtype)
      return self.attn(y, y)

    x = x + over_time(attend, h, frames)
    n, height, width, c = x.shape
    query = self.cross_norm(x).reshape(n // frames, frames * height * width, c)  # every position of a clip
    return x + self.cross_attn(query, text, text_mask).reshape(x.shape)
