"""Conditioning masks of the conditional stage (image-to-video, inpainting, cinemagraphs; DESIGN section 1).

Convention: a mask is float32 (T, H, W, 1) with 1 where pixels are GIVEN (kept from the conditioning video) and 0
where the model generates them. The model's extra input is `(video * mask, mask)`: 3 + 1 channels beside the noisy
clip, so given pixels are the data and free ones are 0 (mid-grey in [-1, 1]).

`condition(video, kind, rng)` returns `(target, masked, mask)` for a clip in [-1, 1] (T, H, W, 3):
- `i2v`: frame 0 given, the rest free.
- `inpaint_box` / `inpaint_stroke`: a random box, or free-form thick strokes, free; static, or moving in a straight
  line across the frames (half of the time each); everything else given.
- `cinemagraph`: the first frame repeated over time, given whole on frame 0 and outside a random box on the others;
  inside the box (frames 1 on), free. The target is that still outside the box and the real clip inside, so the
  model learns to animate only the region, starting from the image itself.
- `unconditional`: all free (mask 0), so one model also serves plain text-to-video.
"""

from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw

KINDS = ('i2v', 'inpaint_box', 'inpaint_stroke', 'cinemagraph', 'unconditional')


def _box(rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
  """(top, left, box height, box width) covering 1/4 to 3/4 of each side."""
  box_h, box_w = (int(rng.integers(max(1, side // 4), max(2, 3 * side // 4) + 1)) for side in (height, width))
  return int(rng.integers(height - box_h + 1)), int(rng.integers(width - box_w + 1)), box_h, box_w


def _strokes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """bool (H, W): 1-3 random polylines, each 3-5 segments, 1/8 to 1/4 of the short side thick."""
  canvas = Image.new('L', (width, height), 0)
  draw = ImageDraw.Draw(canvas)
  for _ in range(int(rng.integers(1, 4))):
    points = [tuple(map(float, rng.uniform((0, 0), (width, height)))) for _ in range(int(rng.integers(4, 7)))]
    thickness = int(rng.integers(max(1, min(height, width) // 8), max(2, min(height, width) // 4) + 1))
    draw.line(points, fill=255, width=thickness, joint='curve')
  return np.asarray(canvas) > 0


def _moving(region: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
  """bool (T, H, W): `region` shifted along a random straight line, up to a quarter of the frame over the clip."""
  height, width = region.shape
  shift = rng.uniform(-0.25, 0.25, 2) * (height, width)
  out = np.zeros((frames, height, width), bool)
  for t in range(frames):
    dy, dx = np.round(shift * t / max(frames - 1, 1)).astype(int)
    src = region[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)]
    out[t, max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
  return out


def free_region(kind: str, frames: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
  """bool (T, H, W), True where the model generates pixels, for the mask `kind`."""
  free = np.zeros((frames, height, width), bool)
  if kind == 'i2v':
    free[1:] = True
  elif kind == 'unconditional':
    free[:] = True
  elif kind in ('inpaint_box', 'cinemagraph'):
    top, left, box_h, box_w = _box(rng, height, width)
    free[:, top:top + box_h, left:left + box_w] = True
    if kind == 'inpaint_box' and rng.random() < 0.5:
      free = _moving(free[0], frames, rng)
    if kind == 'cinemagraph':
      free[0] = False  # the image itself is frame 0
  elif kind == 'inpaint_stroke':
    strokes = _strokes(rng, height, width)
    free = _moving(strokes, frames, rng) if rng.random() < 0.5 else np.broadcast_to(strokes, free.shape).copy()
  else:
    raise ValueError(f'mask kind {kind!r}: must be one of {KINDS}')
  return free


def condition(video: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(target, masked video, mask) for a float32 clip (T, H, W, 3) and a mask kind; see the module docstring."""
  frames, height, width, _ = video.shape
  mask = (~free_region(kind, frames, height, width, rng)).astype(np.float32)[..., None]
  target = video
  if kind == 'cinemagraph':
    target = np.where(mask > 0, np.broadcast_to(video[:1], video.shape), video)
  return target, target * mask, mask


def pick_kind(weights: Mapping[str, float], rng: np.random.Generator) -> str:
  """A mask kind drawn with probability proportional to `weights` (kinds with weight 0 never come up)."""
  unknown = set(weights) - set(KINDS)
  if unknown or not weights or min(weights.values()) < 0 or not sum(weights.values()) > 0:
    raise ValueError(f'mask weights {dict(weights)}: need kinds from {KINDS} with weights >= 0, not all 0')
  kinds = sorted(weights)
  p = np.array([weights[k] for k in kinds], np.float64)
  return kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
