"""The conditional stage's inputs (DESIGN section 1): the model input in training and sampling, and the given clip
and mask of each sampling mode of `lumiere-sample`.

Mask convention (`data/masks.py`): float (T, H, W, 1), 1 where pixels are GIVEN. The model reads `(video * mask,
mask)` beside the noisy clip. Modes:
- `i2v`: the image is frame 0, given; the other frames are generated.
- `inpaint`: the video is given outside the user's region, which is generated (a still mask or one per frame).
- `cinemagraph`: the image repeated over time is given whole on frame 0 and outside the region on the others; the
  region is animated (the training convention of `masks.condition`).
A user's mask file (PNG, or an MP4 with a mask per frame) is white where pixels are GENERATED, black where they are
kept; H.264 blurs edges, so a pixel within `BINARY_TOLERANCE` of 0 or 255 counts as black or white.

Given pixels are kept exactly: the model sees them through its conditioning input while sampling, and after the
last step the output is replaced by the given clip wherever the mask is 1 (`keep_given`).
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from lumiere_jax.data import video as video_lib

MODES = ('i2v', 'inpaint', 'cinemagraph')
BINARY_TOLERANCE = 32


def model_input(video: jax.Array, mask: jax.Array) -> jax.Array:
  """The conditioning video (B, T, H, W, 4): `video` (B, T, H, W, 3) in [-1, 1] masked, then the mask."""
  mask = mask.astype(video.dtype)
  return jnp.concatenate([video * mask, mask], axis=-1)


def keep_given(samples: jax.Array, given: jax.Array, mask: jax.Array) -> jax.Array:
  """`samples` with the `given` clip's pixels wherever `mask` (broadcast over channels) is 1."""
  return jnp.where(mask > 0, given, samples)


def _check_size(array: np.ndarray, size: int, path, what: str) -> None:
  height, width = array.shape[-3:-1] if array.ndim == 4 else array.shape[:2]
  if (height, width) != (size, size):
    raise ValueError(f'{path}: the {what} is {width}x{height} pixels; this model makes {size}x{size} frames')


def read_image(path, size: int) -> np.ndarray:
  """uint8 (size, size, 3) from an image file; ValueError if it has another size."""
  image = np.asarray(Image.open(path).convert('RGB'))
  _check_size(image, size, path, 'image')
  return image


def read_clip(path, frames: int, size: int) -> np.ndarray:
  """The first `frames` frames of a video file, uint8 (frames, size, size, 3); ValueError if shorter or mis-sized."""
  clip, _ = video_lib.decode_video(pathlib.Path(path).read_bytes())
  _check_size(clip, size, path, 'video')
  if len(clip) < frames:
    raise ValueError(f'{path}: the video has {len(clip)} frames; this model makes {frames}-frame clips')
  return clip[:frames]


def read_region(path, frames: int, size: int) -> np.ndarray:
  """bool (frames, size, size), True where pixels are generated, from a binary PNG (every frame) or MP4 mask."""
  if pathlib.Path(path).suffix.lower() == '.mp4':
    gray = read_clip(path, frames, size).mean(axis=-1)
  else:
    gray = np.asarray(Image.open(path).convert('L'), np.float32)
    _check_size(gray, size, path, 'mask')
  grey_pixels = int(((gray > BINARY_TOLERANCE) & (gray < 255 - BINARY_TOLERANCE)).sum())
  if grey_pixels:
    raise ValueError(f'{path}: not a binary mask: {grey_pixels} pixels are neither black (<= {BINARY_TOLERANCE}) '
                     f'nor white (>= {255 - BINARY_TOLERANCE}); white marks the region to generate')
  return np.broadcast_to(gray >= 128, (frames, size, size))


def given_clip(mode: str, frames: int, size: int, *, image: np.ndarray | None = None, clip: np.ndarray | None = None,
               region: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(given clip uint8 (T, H, W, 3), mask float32 (T, H, W, 1), 1 = given) of a sampling mode; see the docstring."""
  if mode == 'i2v':
    clip, free = np.broadcast_to(image, (frames, size, size, 3)), np.arange(frames)[:, None, None] > 0
  elif mode == 'inpaint':
    free = region
  elif mode == 'cinemagraph':
    clip, free = np.broadcast_to(image, (frames, size, size, 3)), np.arange(frames)[:, None, None] > 0
    free = free & region
  else:
    raise ValueError(f'mode {mode!r}: must be one of {MODES}')
  mask = np.broadcast_to(~free, (frames, size, size)).astype(np.float32)[..., None]
  return np.ascontiguousarray(clip), mask


def read_inputs(mode: str, frames: int, size: int, *, image=None, video=None, mask=None):
  """`given_clip` from the files a mode takes: i2v an image; inpaint a video and a mask; cinemagraph an image and a
  mask. Raises ValueError naming a missing or unexpected file, or one of the wrong size, length or values."""
  wanted = {'i2v': ('image',), 'inpaint': ('video', 'mask'), 'cinemagraph': ('image', 'mask')}.get(mode)
  if wanted is None:
    raise ValueError(f'mode {mode!r}: must be one of {MODES}')
  paths = dict(image=image, video=video, mask=mask)
  for name, path in paths.items():
    if (path is None) == (name in wanted):
      raise ValueError(f'mode {mode} takes {" and ".join(f"--{w}" for w in wanted)}; '
                       f'--{name} is {"missing" if path is None else "not used by it"}')
  return given_clip(mode, frames, size, image=read_image(image, size) if image else None,
                    clip=read_clip(video, frames, size) if video else None,
                    region=read_region(mask, frames, size) if mask else None)
