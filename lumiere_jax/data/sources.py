"""Where clips come from, all read through one grain pipeline (`data.source`):

- `synthetic`: the embedded moving-shapes set, written as ArrayRecord on first use;
- a glob of ArrayRecord shards in our record schema (`records.py`; `lumiere-data prepare` writes them);
- `tfds:name[/config][:version]`: any TFDS dataset prepared in array_record format, read TF-free through
  `tfds.data_source`; its features named by `data.tfds_*_key` are mapped onto the record fields.

Each source is a random-access grain source plus a parser from one of its elements to a record dict (the fields of
`records.SCHEMA`; `video` is encoded bytes, or uint8 frames (T, H, W, 3) for TFDS tensors).
"""

import dataclasses
import glob
import os
from collections.abc import Callable

import grain
import numpy as np

from lumiere_jax.data import records, synthetic

DEFAULT_DATA_DIR = '~/.cache/lumiere_jax'
TFDS_PREFIX = 'tfds:'


def source_paths(config) -> list[str]:
  """ArrayRecord shards named by `data.source`; the synthetic set is built on first use."""
  if config.data.source == 'synthetic':
    directory = config.data.synthetic_dir or os.environ.get('LUMIERE_DATA_DIR') or DEFAULT_DATA_DIR
    # Independent of the stage: t2i and base read the same files.
    return synthetic.ensure_synthetic_dataset(
        directory, num_clips=config.data.synthetic_clips, image_size=config.model.image_size,
        num_frames=config.model.num_frames, fps=config.data.fps)
  paths = sorted(glob.glob(os.path.expanduser(config.data.source)))
  if not paths:
    raise ValueError(f'data.source={config.data.source!r}: no file matches (expected "synthetic", a glob of '
                     f'ArrayRecord shards or "{TFDS_PREFIX}name/config")')
  return paths


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
    fps = float(element.get(self.fps_key, self.fps))
    if fps <= 0:
      raise records.BadRecordError('bad field', f'no frame rate: no {self.fps_key!r} feature and data.tfds_fps=0')
    if isinstance(clip, np.ndarray) and clip.dtype == np.uint8 and clip.ndim == 4 and clip.shape[-1] == 3:
      num_frames, height, width, _ = clip.shape
    elif isinstance(clip, bytes):
      num_frames = height = width = 0  # known after decoding
    else:
      raise records.BadRecordError('bad field', f'{self.video_key!r} is neither encoded bytes nor uint8 (T, H, W, 3)')
    key = element.get('id', b'')
    return dict(key=key.decode() if isinstance(key, bytes) else str(key), caption=caption, video=clip, fps=fps,
                num_frames=num_frames, height=height, width=width)


def make_source(config) -> tuple[grain.sources.RandomAccessDataSource, Callable[[object], dict]]:
  """The random-access source named by `data.source` and the parser of its elements into record dicts."""
  source = config.data.source
  if not source.startswith(TFDS_PREFIX):
    return grain.sources.ArrayRecordDataSource(source_paths(config)), records.decode_record
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (heavy; only for TFDS sources)

  name = source[len(TFDS_PREFIX):]
  try:
    data_source = tfds.data_source(name, split=config.data.tfds_split, data_dir=config.data.tfds_data_dir or None)
  except Exception as e:  # tfds raises assorted types for an unknown name, a missing dir or another file format
    raise ValueError(f'data.source={source!r} (split {config.data.tfds_split!r}, data_dir '
                     f'{config.data.tfds_data_dir!r}): cannot open it with tfds.data_source: {e}') from e
  d = config.data
  return data_source, TfdsRecord(d.tfds_video_key, d.tfds_caption_key, d.tfds_fps_key, d.tfds_fps)
