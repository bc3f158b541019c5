"""The embedded default dataset: one coloured shape moving in a straight line over a dark background per clip.

Captions read `a {colour} {shape} moving {direction}`. The set is written through the real ArrayRecord writer as
H.264 records, so the default run exercises the same path as real data. `describe_clip` is the demo's automatic
judge of whether a clip (decoded or sampled) shows the colour and motion its caption asks for.
"""

import json
import os
import pathlib
import shutil
import tempfile

import numpy as np

from lumiere_jax import progress
from lumiere_jax.data import records, video

# Saturated and far apart in RGB, so H.264 chroma subsampling and model samples still map to the right name.
COLOURS = {
    'red': (230, 40, 40),
    'green': (40, 200, 60),
    'blue': (50, 90, 245),
    'yellow': (235, 215, 40),
    'magenta': (220, 50, 220),
    'cyan': (40, 210, 220),
}
SHAPES = ('circle', 'square', 'triangle')
# Unit motion (dx, dy) in image coordinates (y grows downwards).
DIRECTIONS = {'left': (-1, 0), 'right': (1, 0), 'up': (0, -1), 'down': (0, 1)}
BACKGROUND = 16  # grey level of the background
FOREGROUND_THRESHOLD = 100  # a pixel whose brightest channel exceeds this is foreground
_SUPERSAMPLE = 8  # rendering subsamples per pixel side: smooth edges and sub-pixel motion
_MARKER = 'COMPLETE.json'
GENERATOR_VERSION = 2  # part of the cache directory name: bump it whenever make_clip's output changes


def caption(colour: str, shape: str, direction: str) -> str:
  return f'a {colour} {shape} moving {direction}'


def _coverage(shape: str, cx: float, cy: float, radius: float, size: int) -> tuple[np.ndarray, tuple[slice, slice]]:
  """Fraction of each pixel covered by the shape centred at (cx, cy), over its bounding box (rows, cols) only."""
  lo, hi = np.floor(np.array([cy, cx]) - radius).astype(int), np.ceil(np.array([cy, cx]) + radius).astype(int)
  (y0, x0), (y1, x1) = np.maximum(lo, 0), np.minimum(hi, size)
  y = y0 + (np.arange((y1 - y0) * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - cy
  x = x0 + (np.arange((x1 - x0) * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - cx
  y, x = y[:, None], x[None, :]
  if shape == 'circle':
    inside = x**2 + y**2 <= radius**2
  elif shape == 'square':
    inside = (np.abs(x) <= radius) & (np.abs(y) <= radius)
  else:  # triangle, apex up: half-width grows from 0 at y = -radius to radius at y = radius
    inside = (np.abs(x) <= (y + radius) / 2) & (y <= radius)
  cover = inside.reshape(y1 - y0, _SUPERSAMPLE, x1 - x0, _SUPERSAMPLE).mean(axis=(1, 3))
  return cover, (slice(y0, y1), slice(x0, x1))


def make_clip(rng: np.random.Generator, image_size: int, num_frames: int) -> tuple[np.ndarray, str, dict]:
  """One clip of `num_frames + max(1, num_frames // 4)` uint8 frames (image_size, image_size, 3), its caption and
  its attributes.

  The shape (diameter ~image_size / 4) stays inside the frame and crosses most of it: its speed is 75-100% of the
  fastest that fits the clip, so any `num_frames` window (training samples a random one) shows large motion, and
  where the shape starts already hints at where it goes. Slower motion (under a pixel per frame) left the demo's
  temporal layers unable to tell directions apart within its CPU budget.
  """
  colour = list(COLOURS)[rng.integers(len(COLOURS))]
  shape = SHAPES[rng.integers(len(SHAPES))]
  direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
  length = num_frames + max(1, num_frames // 4)
  radius = max(2.0, image_size / 8)
  room = image_size - 2 * radius  # how far the centre can travel
  fastest = room / (length - 1)
  speed = rng.uniform(0.75 * fastest, fastest)
  along = rng.uniform(radius, image_size - radius - speed * (length - 1)) + speed * np.arange(length)
  across = rng.uniform(radius, image_size - radius)
  dx, dy = DIRECTIONS[direction]
  if dx + dy < 0:  # left and up: mirror the path
    along = image_size - along
  frames = np.full((length, image_size, image_size, 3), BACKGROUND, np.float32)
  tint = np.asarray(COLOURS[colour], np.float32) - BACKGROUND
  for t, position in enumerate(along):
    cx, cy = (position, across) if dx else (across, position)
    cover, box = _coverage(shape, cx, cy, radius, image_size)
    frames[t][box] += cover[..., None] * tint
  attributes = dict(colour=colour, shape=shape, direction=direction)
  return np.round(frames).astype(np.uint8), caption(**attributes), attributes


def describe_clip(frames: np.ndarray) -> dict:
  """Judges uint8 (T, H, W, 3) frames: `colour` and `direction` names, or None where there is no clear answer.

  colour: the palette colour nearest to most foreground (bright) pixels. direction: the sign, along the dominant axis,
  of the foreground centroid's displacement from the first to the last frame with foreground; None if it moved less
  than 1/16 of the frame.
  """
  frames = np.asarray(frames)
  _, height, width, _ = frames.shape
  mask = frames.max(axis=-1) > FOREGROUND_THRESHOLD
  present = np.flatnonzero(mask.sum(axis=(1, 2)) >= max(2, height * width // 200))
  if not present.size:
    return dict(colour=None, direction=None)
  palette = np.asarray(list(COLOURS.values()), np.float32)
  pixels = frames[mask].astype(np.float32)
  nearest = np.argmin(((pixels[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
  colour = list(COLOURS)[np.bincount(nearest, minlength=len(palette)).argmax()]

  def centroid(t):
    ys, xs = np.nonzero(mask[t])
    return np.array([xs.mean(), ys.mean()])

  dx, dy = centroid(present[-1]) - centroid(present[0])
  direction = None
  if max(abs(dx), abs(dy)) >= max(height, width) / 16:
    direction = ('right' if dx > 0 else 'left') if abs(dx) >= abs(dy) else ('down' if dy > 0 else 'up')
  return dict(colour=colour, direction=direction)


def _records(num_clips: int, image_size: int, num_frames: int, fps: float, seed: int, what: str):
  """Yields the encoded records, with progress lines about `what`; clip i depends only on (seed, i)."""
  for i in progress.track(range(num_clips), what):
    frames, text, _ = make_clip(np.random.default_rng([seed, i]), image_size, num_frames)
    yield records.encode_record(key=f'shapes-{i:06d}', caption=text, video=video.encode_mp4(frames, fps), fps=fps,
                                num_frames=len(frames), height=image_size, width=image_size)


def ensure_synthetic_dataset(directory: str | os.PathLike, *, num_clips: int, image_size: int, num_frames: int,
                             fps: float, seed: int = 0, num_shards: int = 4) -> list[str]:
  """Shard paths of the synthetic set for these parameters, building it under `directory` if needed.

  The set lives in a subdirectory named after the parameters; it is built in a private temporary directory whose
  completion marker is written last, then renamed into place, so concurrent callers (several local processes) and
  interrupted builds never expose a partial set. A directory without the marker is rebuilt.
  """
  directory = pathlib.Path(directory).expanduser()
  name = (f'shapes-v{GENERATOR_VERSION}-n{num_clips}-s{image_size}-t{num_frames}-fps{fps:g}-seed{seed}'
          f'-shards{num_shards}')
  target = directory / name
  if not (target / _MARKER).exists():
    directory.mkdir(parents=True, exist_ok=True)
    build = pathlib.Path(tempfile.mkdtemp(prefix=f'.{target.name}.tmp-', dir=directory))
    try:
      clips = _records(num_clips, image_size, num_frames, fps, seed, f'building the synthetic set {target}')
      paths = records.write_shards(clips, build, prefix='shapes', num_shards=num_shards)
      (build / _MARKER).write_text(json.dumps(dict(shards=[pathlib.Path(p).name for p in paths], clips=num_clips)))
      if target.exists() and not (target / _MARKER).exists():
        shutil.rmtree(target)  # an incomplete set from an older, interrupted build
      try:
        os.rename(build, target)
      except OSError:  # another process published the same set first
        if not (target / _MARKER).exists():
          raise
    finally:
      shutil.rmtree(build, ignore_errors=True)
  shards = json.loads((target / _MARKER).read_text())['shards']
  return [str(target / name) for name in shards]
