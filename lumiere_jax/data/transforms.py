"""Per-clip transforms: temporal sampling at a target frame rate, square resize and crop, scaling to [-1, 1]."""

import numpy as np
from PIL import Image

from lumiere_jax.data.records import BadRecordError


def frame_indices(num_source_frames: int, source_fps: float, target_fps: float, num_frames: int,
                  rng: np.random.Generator | None = None) -> np.ndarray:
  """Source indices `start + round(i * source_fps / target_fps)` for i < num_frames (rounding half up).

  The clip then plays at `target_fps` (frames are skipped or repeated). `start` is uniform over the valid starts when
  `rng` is given (training) and 0 otherwise (evaluation). Raises `BadRecordError('too short')` when no start fits.
  """
  offsets = np.floor(np.arange(num_frames) * source_fps / target_fps + 0.5).astype(np.int64)
  last_start = num_source_frames - 1 - int(offsets[-1])
  if last_start < 0:
    raise BadRecordError('too short', f'{num_source_frames} frames at {source_fps:g} fps; {num_frames} frames at '
                                      f'{target_fps:g} fps need {offsets[-1] + 1}')
  start = 0 if rng is None else int(rng.integers(last_start + 1))
  return start + offsets


def resize_crop(frames: np.ndarray, size: int) -> np.ndarray:
  """uint8 (T, H, W, 3) -> (T, size, size, 3): centre square of the shortest side, resized (antialiased bilinear)."""
  _, height, width, _ = frames.shape
  if height == width == size:
    return frames
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  frames = frames[:, top:top + side, left:left + side]
  if side == size:
    return np.ascontiguousarray(frames)
  return np.stack([np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BILINEAR))
                   for frame in frames])


def normalize(frames: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [-1, 1]."""
  return frames.astype(np.float32) / 127.5 - 1.0
