"""The layers of the DeepFloyd IF U-Net (diffusers' `UNet2DConditionModel` as IF configures it), channels-last.

Attribute names follow diffusers' module names, so `down_blocks.0.resnets.0.conv1.kernel` here is
`down_blocks.0.resnets.0.conv1.weight` there (`diffusers_weights` maps them). Spatial layers see frames folded into
batch (B*T, H, W, C); the text and its mask come per clip (B, L, D) and are broadcast over the frames here.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lumiere_jax.models import layers

ATTN_IN = ('embed', 'heads')
ATTN_OUT = ('heads', 'embed')
MASKED_BIAS = -10000.0  # diffusers turns a text mask into this additive bias on the attention logits


def activation(name: str):
  """diffusers' `get_activation`: torch's GELU is the exact (erf) one."""
  return {'silu': nnx.silu, 'swish': nnx.silu, 'gelu': lambda x: jax.nn.gelu(x, approximate=False)}[name]


def group_norm(features: int, groups: int, eps: float, *, dtype, rngs: nnx.Rngs) -> nnx.GroupNorm:
  norm = layers.group_norm(features, groups, dtype=dtype, rngs=rngs)
  norm.epsilon = eps
  return norm


def timestep_features(t: jax.Array, dim: int, *, flip_sin_to_cos: bool, freq_shift: float) -> jax.Array:
  """diffusers' `Timesteps`: sinusoidal features (B, dim) float32 of real-valued timesteps (B,)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
  angles = t.astype(jnp.float32)[:, None] * freqs
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class TimestepEmbedding(nnx.Module):
  """linear_1 -> activation -> linear_2."""

  def __init__(self, in_features: int, features: int, act_fn: str, *, dtype, rngs: nnx.Rngs):
    self.act_fn = act_fn
    self.linear_1 = layers.dense(in_features, features, dtype=dtype, rngs=rngs)
    self.linear_2 = layers.dense(features, features, dtype=dtype, rngs=rngs, names=('mlp', 'embed'))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear_2(activation(self.act_fn)(self.linear_1(x)))


class AttentionPooling(nnx.Module):
  """IF's text pooling: the mean token plus a learned position queries all tokens (itself included), per head."""

  def __init__(self, features: int, num_heads: int, *, dtype, rngs: nnx.Rngs):
    if features % num_heads:
      raise ValueError(f'addition_embed_type_num_heads={num_heads} does not divide the text width {features}')
    self.num_heads = num_heads
    self.positional_embedding = nnx.Param(
        nnx.with_partitioning(nnx.initializers.normal(features ** -0.5), (None, 'embed'))(rngs.params(),
                                                                                           (1, features)))
    self.k_proj = layers.dense(features, features, dtype=dtype, rngs=rngs, names=ATTN_IN)
    self.q_proj = layers.dense(features, features, dtype=dtype, rngs=rngs, names=ATTN_IN)
    self.v_proj = layers.dense(features, features, dtype=dtype, rngs=rngs, names=ATTN_IN)

  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, L, D) -> (B, D)."""
    cls = x.mean(axis=1, keepdims=True) + self.positional_embedding[...].astype(x.dtype)
    tokens = jnp.concatenate([cls, x], axis=1)
    split = lambda t: t.reshape(*t.shape[:-1], self.num_heads, -1)  # noqa: E731
    q, k, v = split(self.q_proj(cls)), split(self.k_proj(tokens)), split(self.v_proj(tokens))
    out = jax.nn.dot_product_attention(q, k, v)
    return out.reshape(x.shape[0], -1)


class TextTimeEmbedding(nnx.Module):
  """addition_embed_type='text': LayerNorm -> attention pooling -> linear -> LayerNorm, added to the time embedding."""

  def __init__(self, text_features: int, features: int, num_heads: int, *, dtype, rngs: nnx.Rngs):
    self.norm1 = layers.layer_norm(text_features, dtype=dtype, rngs=rngs)
    self.pool = AttentionPooling(text_features, num_heads, dtype=dtype, rngs=rngs)
    self.proj = layers.dense(text_features, features, dtype=dtype, rngs=rngs)
    self.norm2 = layers.layer_norm(features, dtype=dtype, rngs=rngs)

  def __call__(self, text: jax.Array) -> jax.Array:
    return self.norm2(self.proj(self.pool(self.norm1(text))))


class ResnetBlock(nnx.Module):
  """diffusers' ResnetBlock2D: norm/act [resample] conv, time conditioning (additive or scale-shift), norm/act/conv;
  the skip is resampled the same way (average pooling down, nearest up) and 1x1-projected when widths differ."""

  def __init__(self, in_features: int, out_features: int, cfg, *, resample: str | None = None,
               output_scale_factor: float, dtype, rngs: nnx.Rngs):
    self.act_fn = cfg.act_fn
    self.skip_time_act = cfg.resnet_skip_time_act
    self.scale_shift = cfg.resnet_time_scale_shift == 'scale_shift'
    self.output_scale_factor = output_scale_factor
    self.resample = resample
    groups, eps = cfg.norm_num_groups, cfg.norm_eps
    self.norm1 = group_norm(in_features, groups, eps, dtype=dtype, rngs=rngs)
    self.conv1 = layers.conv(in_features, out_features, dtype=dtype, rngs=rngs)
    self.time_emb_proj = layers.dense(cfg.time_embed_dim, (2 if self.scale_shift else 1) * out_features,
                                      dtype=dtype, rngs=rngs)
    self.norm2 = group_norm(out_features, groups, eps, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(cfg.dropout)
    self.conv2 = layers.conv(out_features, out_features, dtype=dtype, rngs=rngs)
    self.conv_shortcut = (layers.conv(in_features, out_features, kernel_size=1, dtype=dtype, rngs=rngs)
                          if in_features != out_features else None)

  def _resample(self, x: jax.Array) -> jax.Array:
    if self.resample == 'down':
      n, h, w, c = x.shape
      return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    if self.resample == 'up':
      return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return x

  def __call__(self, x: jax.Array, emb: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    """x (N, H, W, Cin), emb (N, E); dropout is active only when `rngs` is given."""
    act = activation(self.act_fn)
    h = self.conv1(self._resample(act(self.norm1(x))))
    x = self._resample(x)
    temb = self.time_emb_proj(emb if self.skip_time_act else act(emb))
    h = layers.film(self.norm2(h), temb) if self.scale_shift else self.norm2(h + temb[:, None, None, :])
    h = self.conv2(self.dropout(act(h), deterministic=rngs is None, rngs=rngs))
    if self.conv_shortcut is not None:
      x = self.conv_shortcut(x)
    return (x + h) / self.output_scale_factor


class AddedKVAttention(nnx.Module):
  """diffusers' Attention with AttnAddedKVProcessor: group-normed pixels query the projected text (added keys and
  values, after an optional group norm of the text) followed by the pixels themselves (unless only_cross_attention);
  residual. The text mask becomes diffusers' additive -10000 bias on the text keys; pixel keys are never masked.

  Under cuDNN or splash (`attention`, resolved by `layers.attention_implementation`), which take no per-key bias row,
  the keys go pixels first and the mask becomes a key count (cuDNN) or segment ids (splash): the same attention
  wherever some key is valid (exp(-10000) underflows to 0); a pixel-free key set whose text is all masked gives zeros
  instead of diffusers' uniform average."""

  def __init__(self, features: int, head_dim: int, cfg, *, only_cross_attention: bool, dtype, rngs: nnx.Rngs,
               attention: str = 'auto'):
    if features % head_dim:
      raise ValueError(f'attention_head_dim={head_dim} does not divide the block width {features}')
    self.num_heads = features // head_dim
    self.attention = layers.check_attention(attention)
    text_features = cfg.cross_attention_dim
    self.group_norm = group_norm(features, cfg.norm_num_groups, 1e-5, dtype=dtype, rngs=rngs)
    # diffusers uses 32 groups for the text norm whatever norm_num_groups says.
    self.norm_cross = (group_norm(text_features, 32, 1e-5, dtype=dtype, rngs=rngs)
                       if cfg.cross_attention_norm == 'group_norm' else None)
    proj = dict(dtype=dtype, rngs=rngs, names=ATTN_IN)
    self.to_q = layers.dense(features, features, **proj)
    self.to_k = None if only_cross_attention else layers.dense(features, features, **proj)
    self.to_v = None if only_cross_attention else layers.dense(features, features, **proj)
    self.add_k_proj = layers.dense(text_features, features, **proj)
    self.add_v_proj = layers.dense(text_features, features, **proj)
    self.to_out = nnx.List([layers.dense(features, features, dtype=dtype, rngs=rngs, names=ATTN_OUT)])

  def __call__(self, x: jax.Array, text: jax.Array, text_mask: jax.Array, *, frames: int) -> jax.Array:
    """x (B*T, H, W, C); text (B, L, D) and text_mask (B, L) per clip."""
    n, height, width, c = x.shape
    split = lambda t: t.reshape(*t.shape[:-1], self.num_heads, -1)  # noqa: E731
    per_frame = lambda t: jnp.repeat(t, frames, axis=0)  # noqa: E731
    if self.norm_cross is not None:
      text = self.norm_cross(text)
    keys, values = [per_frame(split(self.add_k_proj(text)))], [per_frame(split(self.add_v_proj(text)))]
    key_mask = [per_frame(text_mask)]
    h = self.group_norm(x.reshape(n, height * width, c))
    q = split(self.to_q(h))
    if self.to_k is not None:  # pixel keys first: with cuDNN the valid keys must be a prefix
      keys.insert(0, split(self.to_k(h)))
      values.insert(0, split(self.to_v(h)))
      key_mask.insert(0, jnp.ones((n, height * width), bool))
    k, v, key_mask = (jnp.concatenate(t, axis=1) for t in (keys, values, key_mask))
    implementation = layers.attention_implementation(self.attention, q.dtype, q.shape[-1])
    if implementation in ('cudnn', 'splash'):
      out = layers.masked_attention(q, k, v, key_mask, implementation=implementation)
    else:
      bias = jnp.where(key_mask, 0.0, MASKED_BIAS)[:, None, None, :].astype(k.dtype)
      out = jax.nn.dot_product_attention(q, k, v, bias=bias, implementation=implementation)
    return x + self.to_out[0](out.reshape(n, height * width, c)).reshape(x.shape)
