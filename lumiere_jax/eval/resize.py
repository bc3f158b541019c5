"""Bilinear frame resizes that reproduce the ones inside the reference metric implementations, bit for bit in rule.

- `tf1_bilinear_resize`: TF1's `tf.compat.v1.image.resize_bilinear` (align_corners=False, half_pixel_centers=False),
  which the FVD reference code applies before I3D: source coordinate = dst_index * (in_size / out_size).
- `align_corners_bilinear_resize`: Chainer's `F.resize_images` (align_corners=True), which TGANv2's C3D applies before
  the Inception Score: source coordinate = dst_index * (in_size - 1) / (out_size - 1).

Neither antialiases nor crops. Sampling positions are computed on the host from the static sizes (in float32, as TF
does), so the traced work is two gathers and two lerps per axis.
"""

import jax.numpy as jnp
import numpy as np


def _tf1_coordinates(in_size: int, out_size: int) -> np.ndarray:
  return np.arange(out_size, dtype=np.float32) * np.float32(in_size / out_size)


def _align_corners_coordinates(in_size: int, out_size: int) -> np.ndarray:
  return np.linspace(0, in_size - 1, num=out_size)


def _resize_axis(x: jnp.ndarray, axis: int, coordinates: np.ndarray) -> jnp.ndarray:
  """Linear interpolation of `x` along `axis` at fractional source `coordinates`, clamped to the last sample."""
  size = x.shape[axis]
  lower = np.floor(coordinates).astype(np.int32)
  upper = np.minimum(lower + 1, size - 1)
  shape = [1] * x.ndim
  shape[axis] = len(coordinates)
  weight = jnp.asarray((coordinates - lower).astype(np.float32).reshape(shape))
  low, high = jnp.take(x, lower, axis=axis), jnp.take(x, upper, axis=axis)
  return low + (high - low) * weight


def _resize(frames, height: int, width: int, coordinates) -> jnp.ndarray:
  frames = jnp.asarray(frames)
  if frames.ndim < 3:
    raise ValueError(f'need frames (..., H, W, C), got shape {frames.shape}')
  in_height, in_width = frames.shape[-3:-1]
  frames = frames.astype(jnp.float32)
  frames = _resize_axis(frames, frames.ndim - 3, coordinates(in_height, height))
  return _resize_axis(frames, frames.ndim - 2, coordinates(in_width, width))


def tf1_bilinear_resize(frames, height: int, width: int) -> jnp.ndarray:
  """Frames (..., H, W, C), any real dtype, resized to (..., height, width, C) float32 like TF1 `resize_bilinear`."""
  return _resize(frames, height, width, _tf1_coordinates)


def align_corners_bilinear_resize(frames, height: int, width: int) -> jnp.ndarray:
  """Frames (..., H, W, C) resized to (..., height, width, C) float32 like Chainer's `F.resize_images`."""
  return _resize(frames, height, width, _align_corners_coordinates)
