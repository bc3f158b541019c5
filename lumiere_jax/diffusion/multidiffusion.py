"""Temporal MultiDiffusion (Bar-Tal et al. 2023) for models that only fit short clips, such as Lumiere's SSR.

The clip's T frames are covered by windows of W frames overlapping by O (stride W - O; when the windows do not tile
T the last one is moved back to end at the last frame). At every denoising step the model runs once on all windows
as one batch, the overlapping predictions are averaged per pixel, and the sampler takes one step on the whole clip.
Averaging v at a fixed z equals averaging the x0 (or eps) estimates, since both are affine in v (an eps model's
learned-range variance values are averaged alike). Because the step (and any ancestral noise) is global, overlapping
frames never disagree; the result is deterministic for a seed.
"""

import jax
import jax.numpy as jnp
import numpy as np


def window_starts(num_frames: int, window: int, overlap: int) -> tuple[int, ...]:
  """First frame of each window; raises ValueError naming `window` or `overlap` when they cannot cover the clip."""
  if not 1 <= window <= num_frames:
    raise ValueError(f'window={window} must be in [1, {num_frames}], the clip length')
  if not 0 <= overlap < window:
    raise ValueError(f'overlap={overlap} must be in [0, window={window})')
  starts = list(range(0, num_frames - window + 1, window - overlap))
  if starts[-1] + window < num_frames:
    starts.append(num_frames - window)  # the clamped last window
  return tuple(starts)


def windowed(denoise_with_context, *, num_frames: int, window: int, overlap: int, frame_inputs=None,
             window_sharding=None):
  """Wraps a window model into one over the whole clip, with the same signature.

  Args:
    denoise_with_context: (z (B, W, ...), logsnr (B,), context pytree with leading axis B) -> v (B, W, ...).
    num_frames: T, the clip length the wrapper is called with.
    window: W, frames per model call.
    overlap: O, frames shared by consecutive windows.
    frame_inputs: a pytree prefix of the context, True over its per-frame inputs (B, T, ...) (e.g. the low-res clip
      an SSR reads), which each window gets its own frames of; the rest (the caption) is per clip. None: all of it.
    window_sharding: optional sharding for the stacked windows (leading axis N*B), to spread them over devices.

  Returns:
    (z (B, T, ...), logsnr (B,), context) -> v (B, T, ...), the per-frame average of the windows' predictions (its
    trailing shape is v's); for one window covering the clip it is the model's output itself.
  """
  starts = window_starts(num_frames, window, overlap)
  frames = np.asarray(starts)[:, None] + np.arange(window)  # (N, W) frame indices of every window
  coverage = np.bincount(frames.ravel(), minlength=num_frames).astype(np.float32)
  count = len(starts)

  def split(x):  # (B, T, ...) -> (N*B, W, ...), window-major
    if x.shape[1] != num_frames:
      raise ValueError(f'a per-frame input of shape {x.shape} for a clip of num_frames={num_frames}')
    windows = jnp.swapaxes(x[:, frames], 0, 1).reshape(count * x.shape[0], window, *x.shape[2:])
    return windows if window_sharding is None else jax.lax.with_sharding_constraint(windows, window_sharding)

  def repeat(x):  # (B, ...) -> (N*B, ...), window-major
    return jnp.tile(x, (count,) + (1,) * (x.ndim - 1))

  def denoise(z, logsnr, context):
    if frame_inputs is None:
      context = jax.tree.map(repeat, context)
    else:
      context = jax.tree.map(lambda per_frame, part: jax.tree.map(split if per_frame else repeat, part),
                             frame_inputs, context)
    v = denoise_with_context(split(z), repeat(logsnr), context)
    v = jnp.swapaxes(v.reshape(count, z.shape[0], window, *v.shape[2:]), 0, 1)
    total = jnp.zeros((z.shape[0], num_frames, *v.shape[3:]), v.dtype).at[:, frames].add(v)
    return total / coverage.reshape((1, num_frames) + (1,) * (v.ndim - 3))

  return denoise
