"""Per-clip transforms: temporal sampling at a target frame rate, square crop and resize, scaling to [-1, 1].

Temporal sampling works on frame timestamps, so constant (25, 30, 29.97, 60 fps) and variable frame rate sources
are handled alike: the clip's i-th frame is the source frame nearest in time to `start + i / target_fps`.
"""

import numpy as np
from PIL import Image

from lumiere_jax.data.records import BadRecordError

SHORT_CLIP_POLICIES = ('skip', 'loop', 'pad')
CROPS = ('random', 'center')


def target_times(num_source_frames: int, source_fps: float, target_fps: float, num_frames: int,
                 rng: np.random.Generator | None = None) -> np.ndarray:
  """Times in seconds from the first frame at which the clip's `num_frames` frames are shown at `target_fps`.

  The start is a source frame, uniform over those that leave room for the whole clip when `rng` is given (training)
  and the first one otherwise (evaluation); a source too short for the clip starts at its first frame. Counts and
  rates come from the record, so the times are known before decoding (decoding then stops after the last one).
  """
  step = source_fps / target_fps
  last_offset = np.floor((num_frames - 1) * step + 0.5)  # source frames spanned, rounding halves up
  last_start = int(num_source_frames - 1 - last_offset)
  start = 0 if rng is None or last_start <= 0 else int(rng.integers(last_start + 1))
  return start / source_fps + np.arange(num_frames) / target_fps


def nearest_frames(times: np.ndarray, targets: np.ndarray, short_clips: str = 'skip') -> np.ndarray:
  """Indices of the frames (at increasing `times`) nearest to each target time; ties go to the later frame.

  A target past the end of the source (beyond the last frame by more than half a frame interval) is handled by
  `short_clips`: 'skip' raises `BadRecordError('too short')`, 'loop' wraps the targets around the source's length,
  'pad' repeats the last frame.
  """
  if short_clips not in SHORT_CLIP_POLICIES:
    raise ValueError(f'short_clips={short_clips!r}: must be one of {SHORT_CLIP_POLICIES}')
  times = np.asarray(times, np.float64)
  interval = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
  end = times[-1] + interval / 2
  if targets[-1] >= end:
    if short_clips == 'skip':
      raise BadRecordError('too short', f'{len(times)} frames ({end:.3f} s) for a clip spanning '
                                        f'{targets[-1] - targets[0]:.3f} s from {targets[0]:.3f} s')
    if short_clips == 'loop':
      targets = np.mod(targets, times[-1] + interval)
  later = np.clip(np.searchsorted(times, targets), 0, len(times) - 1)
  earlier = np.maximum(later - 1, 0)
  # 1e-9 s absorbs rounding in the times, so exact ties (30 -> 16 fps) resolve the same on every platform.
  use_earlier = targets - times[earlier] < times[later] - targets - 1e-9
  return np.where(use_earlier, earlier, later)


def crop_square(frames: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
  """The square of the shortest side: centred, or at a uniform random offset along the long side with `rng`."""
  _, height, width, _ = frames.shape
  side = min(height, width)
  if rng is None:
    top, left = (height - side) // 2, (width - side) // 2
  else:
    top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
  return frames[:, top:top + side, left:left + side]


def resize_square(frames: np.ndarray, size: int) -> np.ndarray:
  """uint8 (T, S, S, 3) -> (T, size, size, 3), antialiased bilinear (a no-op at the right size)."""
  if frames.shape[1] == size:
    return np.ascontiguousarray(frames)
  return np.stack([np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BILINEAR))
                   for frame in frames])


def normalize(frames):
  """uint8 -> float32 in [-1, 1]; NumPy or JAX arrays (batches are normalised on the device, in the train step)."""
  return frames.astype(np.float32) / 127.5 - 1.0
