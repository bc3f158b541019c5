"""The STUNet's temporal modules (DESIGN section 1): resamplers, (2+1)D conv inflation, temporal self-attention.

The U-Net inserts them next to its spatial blocks when built with `inflate=True`. Activations arrive in the spatial
layout (B*T, H, W, C). The temporal layers either fold pixels into batch, (B*H*W, T, C), with two whole-activation
transposes around each op (`model.temporal_layout='transpose'`), or stay in the video layout (B, T, H, W, C)
('video'): a temporal conv is one channel matmul per tap on frame-shifted inputs, the upsampler never materialises
the duplicated frames (polyphase: 4 products at the input length instead of 3 at twice it), and XLA's temporal
self-attention takes the pixel axes as batch dimensions of its matmuls (cuDNN's kernel keeps the folded layout).
Both give the same numbers; 'auto' picks the measured winner per platform and op (`TEMPORAL_LAYOUT_BY_PLATFORM`).

Under a mesh with a `context` axis (context parallelism, `config.mesh.context`) every temporal op constrains its
video view's frame axis to that axis (`shard_frames`): XLA then partitions each temporal conv with a one-frame halo
exchange between neighbouring devices, and the per-frame spatial layers in between need no communication.

Initialisation makes the inflated model start as the T2I model: resampling convs pass frames through (identity
centre tap), and the inflation and attention blocks end in zero-initialised projections, so they start as the
identity.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from lumiere_jax.models import layers

# The mesh axis (`lumiere_jax.parallel.mesh`) that splits one clip's frames over devices.
CONTEXT_AXIS = 'context'


def temporal_downsample_factor(model_config) -> int:
  """Clip lengths must be multiples of this: 2 ** (number of temporal downsamplings)."""
  return 2 ** sum(bool(flag) for flag in model_config.temporal_downsample)


TEMPORAL_LAYOUTS = ('auto', 'transpose', 'video')
# 'auto' per platform and op, from benchmarks/temporal_layout.py (BENCHMARKS.md): on CPU the transposes win
# (forward + backward, the video layout is 1.0-2.1x slower for the convs and resamplers, 0.96-1.09x for attention).
# GPU and TPU are unmeasured and keep the transposes until that benchmark runs there.
TEMPORAL_LAYOUT_BY_PLATFORM = {'cpu': dict(conv='transpose', attention='transpose')}


def check_layout(layout: str) -> str:
  if layout not in TEMPORAL_LAYOUTS:
    raise ValueError(f'model.temporal_layout={layout!r} is not one of {TEMPORAL_LAYOUTS}')
  return layout


def resolve_layout(layout: str, op: str = 'conv') -> str:
  """'transpose' or 'video' for `model.temporal_layout` on the target platform (`layers.target_platform`), for `op`
  ('conv' covers the resamplers, or 'attention')."""
  if check_layout(layout) == 'auto':
    return TEMPORAL_LAYOUT_BY_PLATFORM.get(layers.target_platform(), {}).get(op, 'transpose')
  return layout


def shard_frames(video: jax.Array) -> jax.Array:
  """video (B, T, ...) with its frames split over the `context` axis of the mesh it is traced under (`jax.set_mesh`,
  `jax.sharding.use_abstract_mesh`), when that axis exists, is > 1 and divides T; otherwise unchanged.

  Only the frame axis is constrained; the others keep what the compiler propagates (the batch over the data axes).
  """
  mesh = jax.sharding.get_abstract_mesh()
  size = 1 if mesh.empty else mesh.shape.get(CONTEXT_AXIS, 1)
  if size == 1 or video.shape[1] % size:
    return video
  free = P.UNCONSTRAINED
  return jax.lax.with_sharding_constraint(video, P(free, CONTEXT_AXIS, *(free,) * (video.ndim - 2)))


def over_time(fn: Callable[[jax.Array], jax.Array], x: jax.Array, frames: int) -> jax.Array:
  """Applies `fn` on (B*H*W, T, C) to x in the spatial layout (B*T, H, W, C); `fn` may change T and C."""
  n, height, width, c = x.shape
  batch = n // frames
  y = shard_frames(x.reshape(batch, frames, height, width, c)).transpose(0, 2, 3, 1, 4).reshape(-1, frames, c)
  y = fn(y)
  y = shard_frames(y.reshape(batch, height, width, *y.shape[1:]).transpose(0, 3, 1, 2, 4))
  return y.reshape(-1, height, width, y.shape[-1])


def _taps(conv: nnx.Conv, video: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(video, kernel (3, C, D), bias (D,)) of a kernel-3 temporal conv, in the conv's compute dtype."""
  dtype = conv.dtype or jnp.result_type(video, conv.kernel[...])
  return video.astype(dtype), conv.kernel[...].astype(dtype), conv.bias[...].astype(dtype)


def _previous(video: jax.Array) -> jax.Array:
  """video[:, t - 1] at frame t (zero at the first frame: the conv's padding)."""
  return jnp.pad(video[:, :-1], ((0, 0), (1, 0)) + ((0, 0),) * (video.ndim - 2))


def _next(video: jax.Array) -> jax.Array:
  """video[:, t + 1] at frame t (zero at the last frame)."""
  return jnp.pad(video[:, 1:], ((0, 0), (0, 1)) + ((0, 0),) * (video.ndim - 2))


def shifted_conv(conv: nnx.Conv, video: jax.Array) -> jax.Array:
  """`conv` (kernel 3, padding 1, stride 1 or 2) over the frames of video (B, T, H, W, C), without transposes:
  one channel matmul per tap on frame-shifted inputs."""
  video, kernel, bias = _taps(conv, video)
  if conv.strides in (1, (1,)):
    return _previous(video) @ kernel[0] + video @ kernel[1] + _next(video) @ kernel[2] + bias
  if video.shape[1] % 2:  # the conv's zero padding past the last frame
    video = jnp.pad(video, ((0, 0), (0, 1)) + ((0, 0),) * 3)
  # Output frame t reads frames 2t-1, 2t, 2t+1: the odd frames through taps 0 and 2, the even ones through tap 1.
  even, odd = video[:, 0::2], video[:, 1::2]
  return _previous(odd) @ kernel[0] + even @ kernel[1] + odd @ kernel[2] + bias


def shifted_upsample(conv: nnx.Conv, video: jax.Array) -> jax.Array:
  """`conv` (kernel 3, stride 1) over the frames of video (B, T, H, W, C) repeated twice, at the original length:
  frame 2t is x[t-1] w0 + x[t] (w1 + w2), frame 2t+1 is x[t] (w0 + w1) + x[t+1] w2."""
  video, kernel, bias = _taps(conv, video)
  even = _previous(video) @ kernel[0] + video @ (kernel[1] + kernel[2]) + bias
  odd = video @ (kernel[0] + kernel[1]) + _next(video) @ kernel[2] + bias
  batch, frames, *rest = even.shape
  return jnp.stack([even, odd], axis=2).reshape(batch, 2 * frames, *rest)


def in_video_layout(fn: Callable[[jax.Array], jax.Array], x: jax.Array, frames: int) -> jax.Array:
  """Applies `fn` on (B, T, H, W, C) to x in the spatial layout (B*T, H, W, C): reshapes only, no data movement."""
  y = shard_frames(fn(shard_frames(x.reshape(-1, frames, *x.shape[1:]))))
  return y.reshape(-1, *y.shape[2:])


class TemporalDownsample(nnx.Module):
  """Kernel-3 temporal conv with stride 2, identity-initialised: at init it keeps frames 0, 2, 4, ..."""

  def __init__(self, features: int, *, dtype, rngs: nnx.Rngs, layout: str = 'auto'):
    self.conv = layers.temporal_conv(features, strides=2, identity_init=True, dtype=dtype, rngs=rngs)
    self.layout = check_layout(layout)

  def __call__(self, x: jax.Array, *, frames: int) -> jax.Array:
    """(B*T, H, W, C) -> (B*T/2, H, W, C)."""
    if resolve_layout(self.layout) == 'video':
      return in_video_layout(lambda v: shifted_conv(self.conv, v), x, frames)
    return over_time(self.conv, x, frames)


class TemporalUpsample(nnx.Module):
  """Frame duplication then an identity-initialised kernel-3 temporal conv: at init, nearest-neighbour upsampling."""

  def __init__(self, features: int, *, dtype, rngs: nnx.Rngs, layout: str = 'auto'):
    self.conv = layers.temporal_conv(features, identity_init=True, dtype=dtype, rngs=rngs)
    self.layout = check_layout(layout)

  def __call__(self, x: jax.Array, *, frames: int) -> jax.Array:
    """(B*T, H, W, C) -> (B*2T, H, W, C)."""
    if resolve_layout(self.layout) == 'video':
      return in_video_layout(lambda v: shifted_upsample(self.conv, v), x, frames)
    return over_time(lambda y: self.conv(jnp.repeat(y, 2, axis=1)), x, frames)


class ConvInflation(nnx.Module):
  """Factorised (2+1)D residual block: x + proj(temporal_conv(FiLM(spatial_conv(x)))), projection zero-initialised.

  FiLM from the conditioning vector inside the branch (our choice; the paper does not say) lets the temporal layers
  see the noise level and the caption.
  """

  def __init__(self, features: int, emb_features: int, *, groups: int, dtype, rngs: nnx.Rngs, layout: str = 'auto'):
    self.layout = check_layout(layout)
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
    if resolve_layout(self.layout) == 'video':
      h = in_video_layout(lambda v: shifted_conv(self.time_conv, v), h, frames)
    else:
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
               rngs: nnx.Rngs, attention: str = 'auto', layout: str = 'auto'):
    kw = dict(dtype=dtype, rngs=rngs, zero_out=True, implementation=attention)
    self.layout = check_layout(layout)
    self.norm = layers.layer_norm(features, dtype=dtype, rngs=rngs)
    self.film = layers.dense(emb_features, 2 * features, dtype=dtype, rngs=rngs)
    self.attn = layers.Attention(features, features, num_heads, **kw)
    self.cross_norm = layers.layer_norm(features, dtype=dtype, rngs=rngs)
    self.cross_attn = layers.Attention(features, text_features, num_heads, **kw)

  def _self_attention(self, h: jax.Array, frames: int) -> jax.Array:
    """attn(h + frame position) over the frames of each pixel of h (B*T, H, W, C), in the layout that
    `model.temporal_layout` picks."""
    position = layers.sinusoidal(jnp.arange(frames), h.shape[-1]).astype(h.dtype)  # (T, C)
    if resolve_layout(self.layout, 'attention') == 'video' and self.attn.resolved(h.dtype) == 'xla':
      return in_video_layout(lambda v: self.attn.over_frames(v + position[:, None, None]), h, frames)

    def attend(y):  # (B*H*W, T, C)
      y = y + position
      return self.attn(y, y)

    return over_time(attend, h, frames)

  def __call__(self, x: jax.Array, emb: jax.Array, text: jax.Array, text_mask: jax.Array, *,
               frames: int) -> jax.Array:
    """x (B*T, H, W, C), emb (B*T, E); text (B, L, D) and text_mask (B, L) per clip."""
    x = x + self._self_attention(layers.film(self.norm(x), self.film(nnx.silu(emb))), frames)
    n, height, width, c = x.shape
    query = self.cross_norm(x).reshape(n // frames, frames * height * width, c)  # every position of a clip
    return x + self.cross_attn(query, text, text_mask).reshape(x.shape)
