"""Where clips come from, all read through one grain pipeline (`data.source`):

- `synthetic`: the embedded moving-shapes set, written as ArrayRecord on first use;
- a glob of ArrayRecord shards in our record schema (`records.py`; `lumiere-data prepare` writes them);
- a glob of WebDataset `.tar` shards of image-caption pairs as img2dataset writes them (`webdataset.py`);
- `tfds:name[/config][:version]`: any TFDS dataset prepared in array_record format, read TF-free through
  `tfds.data_source`; its features named by `data.tfds_*_key` are mapped onto the record fields (a uint8 image
  (H, W[, C]) in place of a video becomes a one-frame clip).

An image is a one-frame clip everywhere (`lumiere-data prepare --images` stores it as a one-frame MP4), which is what
the t2i stage reads. `data.image_source` (same forms) adds a second source whose elements are mixed with those of
`data.source`, a fraction `data.image_fraction` of them (`Mixture`): images and video frames for the t2i stage.

Each source is a random-access grain source plus a parser from one of its elements to a record dict (the fields of
`records.SCHEMA`; `video` is encoded bytes, or uint8 frames (T, H, W, 3) for TFDS tensors and decoded images).
"""

import dataclasses
import fractions
import glob
import math
import os
from collections.abc import Callable

import grain
import numpy as np

from lumiere_jax.data import images, records, synthetic, webdataset

DEFAULT_DATA_DIR = '~/.cache/lumiere_jax'
TFDS_PREFIX = 'tfds:'
TAR_SUFFIX = '.tar'
MIXTURE_PERIOD = 1024  # elements over which a mixture's proportions are exact (its pattern repeats after that)


def source_paths(config, source: str | None = None) -> list[str]:
  """Shards named by `source` (default `data.source`); the synthetic set is built on first use."""
  source = config.data.source if source is None else source
  if source == 'synthetic':
    directory = config.data.synthetic_dir or os.environ.get('LUMIERE_DATA_DIR') or DEFAULT_DATA_DIR
    # Independent of the stage: t2i and base read the same files.
    return synthetic.ensure_synthetic_dataset(
        directory, num_clips=config.data.synthetic_clips, image_size=config.model.image_size,
        num_frames=config.model.num_frames, fps=config.data.fps)
  paths = sorted(glob.glob(os.path.expanduser(source)))
  if not paths:
    raise ValueError(f'{_field(config, source)}={source!r}: no file matches (expected "synthetic", a glob of '
                     f'ArrayRecord or WebDataset {TAR_SUFFIX} shards, or "{TFDS_PREFIX}name/config")')
  return paths


def _field(config, source: str) -> str:
  return 'data.source' if source == config.data.source else 'data.image_source'


@dataclasses.dataclass(frozen=True)
class TfdsRecord:
  """A TFDS element (dict of NumPy values) -> a record dict; `fps` is used when the element has no `fps_key`."""

  video_key: str
  caption_key: str
  fps_key: str
  fps: float

  def __call__(self, element: dict) -> dict:
    missing = [key for key in (self.video_key, self.caption_key) if key not in element]
    if missing:
      raise records.BadRecordError('missing field', f'TFDS features {missing} (have {sorted(element)})')
    clip, text = element[self.video_key], element[self.caption_key]
    try:
      caption = text.decode('utf-8') if isinstance(text, bytes) else str(text)
    except UnicodeDecodeError as e:
      raise records.BadRecordError('bad field', f'caption is not UTF-8: {e}') from e
    if not caption.strip():
      raise records.BadRecordError('empty caption')
    key = element.get('id', b'')
    key = key.decode() if isinstance(key, bytes) else str(key)
    if isinstance(clip, np.ndarray) and clip.ndim in (2, 3):  # an image feature: one frame
      rgb = images.array_to_rgb(clip)
      return dict(key=key, caption=caption, video=images.as_clip(rgb), fps=images.IMAGE_FPS, num_frames=1,
                  height=rgb.shape[0], width=rgb.shape[1])
    fps = float(element.get(self.fps_key, self.fps))
    if fps <= 0:
      raise records.BadRecordError('bad field', f'no frame rate: no {self.fps_key!r} feature and data.tfds_fps=0')
    if isinstance(clip, np.ndarray) and clip.dtype == np.uint8 and clip.ndim == 4 and clip.shape[-1] == 3:
      num_frames, height, width, _ = clip.shape
    elif isinstance(clip, bytes):
      num_frames = height = width = 0  # known after decoding
    else:
      raise records.BadRecordError('bad field', f'{self.video_key!r} is neither encoded bytes, uint8 (T, H, W, 3) '
                                                'frames nor a uint8 (H, W[, C]) image')
    return dict(key=key, caption=caption, video=clip, fps=fps, num_frames=num_frames, height=height, width=width)


class Mixture:
  """Elements of several sources interleaved by integer `counts` per period: element i -> (source k, its element).

  Within each `MIXTURE_PERIOD`-long period (a multiple of sum(counts)), source k holds exactly its share of the
  positions, placed by a fixed shuffle (so every process's slice i::P gets about the same share); its elements are
  taken in order, cycling: one epoch (`len`) is the whole periods that read every source with a positive count at
  least once, the smaller sources repeated to keep the proportions.
  """

  def __init__(self, sources: list, counts: list[int], names: list[str]):
    if len(sources) != len(counts) or min(counts) < 0 or not sum(counts):
      raise ValueError(f'mixture counts {counts} for {len(sources)} sources')
    empty = [name for name, source, count in zip(names, sources, counts) if count and not len(source)]
    if empty:
      raise ValueError(f'{empty[0]} has no elements to mix')
    self._sources, self._names = list(sources), list(names)
    scale = math.ceil(MIXTURE_PERIOD / sum(counts))
    self._counts = np.asarray(counts, np.int64) * scale
    # Evenly spread: the j-th element of source k sits at (j + 1/2) / count along the period, then shuffled.
    slots = sorted(((j + 0.5) / count, k, j) for k, count in enumerate(self._counts) for j in range(count))
    order = np.random.default_rng(0).permutation(len(slots))
    self._source_of = np.asarray([slots[i][1] for i in order], np.int64)
    self._rank = np.asarray([slots[i][2] for i in order], np.int64)
    self._periods = max(math.ceil(len(source) / count) for source, count in zip(sources, self._counts) if count)

  def __len__(self) -> int:
    return self._periods * len(self._source_of)

  def _locate(self, index: int) -> tuple[int, int]:
    period, slot = divmod(index, len(self._source_of))
    k = int(self._source_of[slot])
    return k, int(period * self._counts[k] + self._rank[slot]) % len(self._sources[k])

  def __getitem__(self, index: int) -> tuple[int, object]:
    k, inner = self._locate(index)
    return k, self._sources[k][inner]

  def describe(self, index: int) -> str:
    """Where element `index` lives, for error messages."""
    k, inner = self._locate(index)
    source = self._sources[k]
    where = source.describe(inner) if hasattr(source, 'describe') else f'element {inner}'
    return f'{self._names[k]} {where}'

  def __repr__(self) -> str:
    return f'Mixture({dict(zip(self._names, self._counts.tolist()))} per {len(self._source_of)})'


@dataclasses.dataclass(frozen=True)
class MixtureRecord:
  """A `Mixture` element (source k, element) -> a record dict, by source k's parser."""

  parsers: tuple[Callable[[object], dict], ...]

  def __call__(self, element: tuple[int, object]) -> dict:
    k, inner = element
    return self.parsers[k](inner)


def mixture_counts(image_fraction: float) -> list[int]:
  """(video, image) elements per period for `data.image_fraction` (a fraction with a denominator up to 1000)."""
  if not 0 <= image_fraction <= 1:
    raise ValueError(f'data.image_fraction={image_fraction!r} must be in [0, 1]')
  fraction = fractions.Fraction(image_fraction).limit_denominator(1000)
  return [fraction.denominator - fraction.numerator, fraction.numerator]


def make_source(config) -> tuple[grain.sources.RandomAccessDataSource, Callable[[object], dict]]:
  """The random-access source named by `data.source` (mixed with `data.image_source` when that is set) and the
  parser of its elements into record dicts."""
  main = _single_source(config, config.data.source)
  image_source = config.data.image_source
  if not image_source:
    return main
  images_ = _single_source(config, image_source)
  names = ['data.source', 'data.image_source']
  mixture = Mixture([main[0], images_[0]], mixture_counts(config.data.image_fraction), names)
  return mixture, MixtureRecord((main[1], images_[1]))


def describer(config) -> Callable[[int], str] | None:
  """Element index -> where it lives, for the sources that know (WebDataset shards, mixtures); None for the others.
  The source is built on the first call only (an error message is being written)."""
  source = config.data.source
  if not (config.data.image_source or
          (not source.startswith(TFDS_PREFIX) and any(map(_is_tar, source_paths(config))))):
    return None
  built = []

  def describe(index: int) -> str:
    if not built:
      built.append(make_source(config)[0])
    return built[0].describe(index)
  return describe


def _is_tar(source: str) -> bool:
  return source.endswith(TAR_SUFFIX)


def _single_source(config, source: str) -> tuple[grain.sources.RandomAccessDataSource, Callable[[object], dict]]:
  """One source string (synthetic, a shard glob, tfds:) -> its random-access source and element parser."""
  if not source.startswith(TFDS_PREFIX):
    paths = source_paths(config, source)
    tars = [path for path in paths if _is_tar(path)]
    if tars and len(tars) < len(paths):
      raise ValueError(f'{_field(config, source)}={source!r} matches both {TAR_SUFFIX} and other files: '
                       f'{tars[0]}, {(set(paths) - set(tars)).pop()}')
    if tars:
      parse = webdataset.ImageSample(config.data.image_min_size, config.data.image_max_pixels)
      return webdataset.TarSamples(tars), parse
    return grain.sources.ArrayRecordDataSource(paths), records.decode_record
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (heavy; only for TFDS sources)

  name = source[len(TFDS_PREFIX):]
  try:
    data_source = tfds.data_source(name, split=config.data.tfds_split, data_dir=config.data.tfds_data_dir or None)
  except Exception as e:  # tfds raises assorted types for an unknown name, a missing dir or another file format
    raise ValueError(f'{_field(config, source)}={source!r} (split {config.data.tfds_split!r}, data_dir '
                     f'{config.data.tfds_data_dir!r}): cannot open it with tfds.data_source: {e}') from e
  d = config.data
  # An image dataset mixed in names its image feature by data.tfds_image_key; data.source's is data.tfds_video_key.
  key = d.tfds_video_key if source == d.source else d.tfds_image_key
  return data_source, TfdsRecord(key, d.tfds_caption_key, d.tfds_fps_key, d.tfds_fps)
