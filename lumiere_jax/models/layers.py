"""Parameterised primitives shared by the U-Net, the temporal blocks and the text encoder.

Every parameter of the models is created here, so each carries logical axis names (the `out_sharding` metadata that
`lumiere_jax.parallel.sharding` maps to the mesh). Parameters are float32; layers compute in the `dtype` passed in.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from lumiere_jax.models import splash

EMBED_MLP = ('embed', 'mlp')
ATTENTION_IMPLEMENTATIONS = ('auto', 'xla', 'cudnn', 'splash')


@dataclasses.dataclass(frozen=True)
class Execution:
  """How the U-Nets run, not what they compute: attention kernel, temporal-layer layout, remat policy per level.

  `remat_policy` applies to the `remat_levels` finest levels (-1: every level and the middle), `remat_coarse_policy`
  to the others, so the coarse levels may keep their (small) activations while level 0 recomputes. Policies are
  'none' or names in `jax.checkpoint_policies`; `temporal_layout` is read by `stunet`.
  """
  attention: str = 'auto'
  temporal_layout: str = 'auto'
  remat_policy: str = 'none'
  remat_levels: int = -1
  remat_coarse_policy: str = 'none'

  def __post_init__(self):
    check_attention(self.attention)
    for name in ('remat_policy', 'remat_coarse_policy'):
      policy = getattr(self, name)
      if policy != 'none' and not hasattr(jax.checkpoint_policies, policy):
        raise ValueError(f'model.{name}={policy!r} is neither "none" nor a name in jax.checkpoint_policies')
    if not isinstance(self.remat_levels, int) or self.remat_levels < -1:
      raise ValueError(f'model.remat_levels={self.remat_levels!r}: the number of finest levels under '
                       'model.remat_policy, or -1 for all')

  @classmethod
  def from_model_config(cls, model_config) -> 'Execution':
    """The `model` config section's fields, with the defaults above for those it lacks."""
    return cls(**{f.name: model_config.get(f.name, f.default) for f in dataclasses.fields(cls)})

  def remat_at(self, level: int) -> str:
    """The remat policy of the layers of `level` (0 = finest; the middle is the coarsest level)."""
    return self.remat_policy if self.remat_levels < 0 or level < self.remat_levels else self.remat_coarse_policy


def _param_init(zero_init: bool):
  return nnx.initializers.zeros_init() if zero_init else nnx.initializers.lecun_normal()


def dense(in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs, names=EMBED_MLP, zero_init=False,
          use_bias=True) -> nnx.Linear:
  """A linear layer over the last axis; `names` label the kernel (in, out), the bias takes the out name."""
  return nnx.Linear(
      in_features, out_features, use_bias=use_bias, dtype=dtype,
      kernel_init=nnx.with_partitioning(_param_init(zero_init), names),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), names[-1:]), rngs=rngs)


def conv(in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs, kernel_size=3, strides=1,
         zero_init=False) -> nnx.Conv:
  """A 2-D convolution on (N, H, W, C) with symmetric 'same' padding (output H/strides for even H)."""
  pad = kernel_size // 2
  return nnx.Conv(
      in_features, out_features, (kernel_size, kernel_size), strides, padding=((pad, pad), (pad, pad)), dtype=dtype,
      kernel_init=nnx.with_partitioning(_param_init(zero_init), (None, None, *EMBED_MLP)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ('mlp',)), rngs=rngs)


def _identity_taps(key, shape, dtype=jnp.float32):
  """Kernel (3, C, C) whose centre tap is the identity: the conv passes each frame through unchanged."""
  del key
  taps, c_in, c_out = shape
  if c_in != c_out:
    raise ValueError(f'an identity-initialised temporal conv needs equal channels, got {c_in} -> {c_out}')
  return jnp.zeros(shape, dtype).at[taps // 2].set(jnp.eye(c_in, dtype=dtype))


def temporal_conv(features: int, *, dtype, rngs: nnx.Rngs, strides=1, identity_init=False) -> nnx.Conv:
  """A kernel-3 convolution over the frames of (N, T, C), padding (1, 1); optionally identity-initialised."""
  init = _identity_taps if identity_init else nnx.initializers.lecun_normal()
  return nnx.Conv(
      features, features, (3,), strides, padding=((1, 1),), dtype=dtype,
      kernel_init=nnx.with_partitioning(init, (None, *EMBED_MLP)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ('mlp',)), rngs=rngs)


def group_norm(features: int, groups: int, *, dtype, rngs: nnx.Rngs) -> nnx.GroupNorm:
  """GroupNorm over everything but the batch axis (per frame in the spatial layout)."""
  return nnx.GroupNorm(
      features, num_groups=groups, epsilon=1e-5, dtype=dtype,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ('norm',)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ('norm',)), rngs=rngs)


def layer_norm(features: int, *, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(
      features, epsilon=1e-5, dtype=dtype,
      scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ('norm',)),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ('norm',)), rngs=rngs)


def sinusoidal(positions: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """Transformer sinusoidal features (..., dim) float32 of real-valued positions (...,); `dim` even."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def film(h: jax.Array, scale_shift: jax.Array) -> jax.Array:
  """FiLM: h (N, ..., C) * (1 + scale) + shift, with (scale, shift) = scale_shift (N, 2C) split in two."""
  scale, shift = jnp.split(scale_shift, 2, axis=-1)
  expand = (slice(None),) + (None,) * (h.ndim - 2)
  return h * (1 + scale[expand]) + shift[expand]


def check_attention(requested: str) -> str:
  if requested not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f'model.attention={requested!r} is not one of {ATTENTION_IMPLEMENTATIONS}')
  return requested


def target_platform() -> str:
  """The platform the code being traced will run on: that of the mesh it is traced under (`jax.set_mesh`; a TPU
  topology compiled ahead of time on a CPU host), else this process's default backend."""
  device = jax.sharding.get_abstract_mesh().abstract_device  # None outside a mesh
  return jax.default_backend() if device is None else device.platform


def attention_implementation(requested: str, dtype, head_dim: int) -> str:
  """The attention implementation for `model.attention` on the target platform (`target_platform`).

  'auto' takes cuDNN flash attention on GPU for bf16/fp16 heads it supports (dim a multiple of 8, at most 128),
  Pallas splash attention on TPU (`models/splash.py`), XLA elsewhere; 'cudnn' off a GPU or 'splash' off a TPU is an
  error rather than a silent fallback.
  """
  platform = target_platform()
  needs = {'cudnn': ('gpu', 'a GPU'), 'splash': ('tpu', 'a TPU')}.get(check_attention(requested))
  if needs and platform != needs[0]:
    raise ValueError(f'model.attention={requested!r} needs {needs[1]}; this process runs on {platform!r} (use '
                     "'auto' or 'xla')")
  if requested == 'auto':
    if platform == 'tpu':
      return 'splash'
    fused = platform == 'gpu' and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0
    return 'cudnn' if fused and head_dim <= 128 else 'xla'
  return requested


def key_mask_arguments(key_mask: jax.Array, implementation: str) -> dict:
  """`jax.nn.dot_product_attention` arguments masking keys by key_mask (N, S) bool, valid keys first (a padded
  caption). cuDNN takes per-row key counts (its padding mask, no (N, S) mask tensor); a row with no valid key
  attends to its first key instead of to nothing, which keeps it finite, and `masked_attention` zeroes it."""
  if implementation == 'cudnn':
    return dict(key_value_seq_lengths=jnp.maximum(key_mask.sum(axis=-1), 1).astype(jnp.int32))
  return dict(mask=key_mask[:, None, None, :])


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array, *, implementation: str):
  """Attention (N, S, heads, d) over the keys valid in key_mask (N, L); rows without a valid key are zero.

  jnp.where, not a multiplication, so nothing non-finite in a dropped row can reach the output or the gradient.
  """
  if implementation == 'splash':
    return splash.splash_attention(q, k, v, key_mask)
  out = jax.nn.dot_product_attention(q, k, v, implementation=implementation,
                                     **key_mask_arguments(key_mask, implementation))
  return jnp.where(key_mask.any(axis=-1)[:, None, None, None], out, 0)


class Attention(nnx.Module):
  """Multi-head attention of x (N, S, C) over a context (N, L, D), optionally masked per context position.

  Query rows with no valid context position (an empty caption) get a zero output, not an average of padding.
  `implementation` is `model.attention` (`attention_implementation`), resolved when called.
  """

  def __init__(self, features: int, context_features: int, num_heads: int, *, dtype, rngs: nnx.Rngs,
               zero_out=False, implementation: str = 'auto'):
    if features % num_heads:
      raise ValueError(f'num_heads={num_heads} does not divide the attention width {features}')
    self.num_heads = num_heads
    self.implementation = check_attention(implementation)
    qkv = dict(dtype=dtype, rngs=rngs, names=('embed', 'heads'), use_bias=False)
    self.query = dense(features, features, **qkv)
    self.key = dense(context_features, features, **qkv)
    self.value = dense(context_features, features, **qkv)
    self.out = dense(features, features, dtype=dtype, rngs=rngs, names=('heads', 'embed'), use_bias=False,
                     zero_init=zero_out)

  def resolved(self, dtype) -> str:
    """The implementation this module calls for inputs of `dtype` here."""
    return attention_implementation(self.implementation, dtype, self.query.out_features // self.num_heads)

  def _split(self, t: jax.Array) -> jax.Array:
    return t.reshape(*t.shape[:-1], self.num_heads, -1)

  def over_frames(self, video: jax.Array) -> jax.Array:
    """Self-attention of video (B, T, H, W, C) over its frames, per pixel, without leaving that layout: XLA's matmuls
    take the pixel axes as batch dimensions (no cuDNN kernel reads this layout)."""
    q, k, v = (self._split(proj(video)) for proj in (self.query, self.key, self.value))
    logits = jnp.einsum('bthwnd,bshwnd->bhwnts', q, k) * q.shape[-1] ** -0.5
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum('bhwnts,bshwnd->bthwnd', weights, v)
    return self.out(out.reshape(video.shape[:-1] + (-1,)))

  def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    q, k, v = self._split(self.query(x)), self._split(self.key(context)), self._split(self.value(context))
    implementation = self.resolved(q.dtype)
    if implementation == 'splash':
      out = splash.splash_attention(q, k, v, mask)
    elif mask is None:
      out = jax.nn.dot_product_attention(q, k, v, implementation=implementation)
    else:
      out = masked_attention(q, k, v, mask, implementation=implementation)
    return self.out(out.reshape(x.shape[:-1] + (-1,)))


def checkpoint(policy: str, module: nnx.Module, *args, **static):
  """Calls `module(*args, **static)`, rematerialised under `jax.checkpoint_policies.<policy>` unless 'none'.

  `static` holds Python values (frame counts) that must stay concrete inside the checkpointed function.
  """
  if policy == 'none':
    return module(*args, **static)
  return nnx.remat(lambda m, *a: m(*a, **static), policy=getattr(jax.checkpoint_policies, policy))(module, *args)


class ResBlock(nnx.Module):
  """GroupNorm/SiLU/conv3x3 twice, FiLM from the conditioning vector between, 1x1 skip when widths differ.

  The last conv is zero-initialised, so a fresh block is its skip path.
  """

  def __init__(self, in_features: int, out_features: int, emb_features: int, *, groups: int, dropout: float, dtype,
               rngs: nnx.Rngs):
    self.norm_in = group_norm(in_features, groups, dtype=dtype, rngs=rngs)
    self.conv_in = conv(in_features, out_features, dtype=dtype, rngs=rngs)
    self.film = dense(emb_features, 2 * out_features, dtype=dtype, rngs=rngs)
    self.norm_out = group_norm(out_features, groups, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)
    self.conv_out = conv(out_features, out_features, dtype=dtype, rngs=rngs, zero_init=True)
    self.skip = (conv(in_features, out_features, kernel_size=1, dtype=dtype, rngs=rngs)
                 if in_features != out_features else None)

  def __call__(self, x: jax.Array, emb: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    """x (N, H, W, Cin), emb (N, E); dropout is active only when `rngs` is given."""
    h = self.conv_in(nnx.silu(self.norm_in(x)))
    h = nnx.silu(film(self.norm_out(h), self.film(nnx.silu(emb))))
    h = self.conv_out(self.dropout(h, deterministic=rngs is None, rngs=rngs))
    return (x if self.skip is None else self.skip(x)) + h


class SpatialAttention(nnx.Module):
  """Self-attention over the pixels of each frame, then cross-attention to the clip's caption; both residual with
  zero-initialised output projections."""

  def __init__(self, features: int, text_features: int, *, num_heads: int, groups: int, dtype, rngs: nnx.Rngs,
               attention: str = 'auto'):
    kw = dict(dtype=dtype, rngs=rngs, zero_out=True, implementation=attention)
    self.self_norm = group_norm(features, groups, dtype=dtype, rngs=rngs)
    self.self_attn = Attention(features, features, num_heads, **kw)
    self.cross_norm = group_norm(features, groups, dtype=dtype, rngs=rngs)
    self.cross_attn = Attention(features, text_features, num_heads, **kw)

  def __call__(self, x: jax.Array, text: jax.Array, text_mask: jax.Array, *, frames: int) -> jax.Array:
    """x (B*T, H, W, C); text (B, L, D) and text_mask (B, L) are per clip.

    For cross-attention the frames are folded into the query sequence (B, T*H*W, C): each frame attends to its own
    clip's caption exactly as with the caption copied per frame, without materialising B*T copies of it.
    """
    n, height, width, c = x.shape
    seq = x.reshape(n, height * width, c)
    h = self.self_norm(seq)
    seq = seq + self.self_attn(h, h)
    q = self.cross_norm(seq).reshape(n // frames, frames * height * width, c)
    seq = seq + self.cross_attn(q, text, text_mask).reshape(seq.shape)
    return seq.reshape(x.shape)
