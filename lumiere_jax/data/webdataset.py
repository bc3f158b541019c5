"""WebDataset tar shards (as img2dataset writes them) read in place as a random-access source of image-caption pairs.

A shard `00000.tar` holds consecutive members per sample that share a key, the member's name up to the first dot of
its base name: `000000012.jpg` (the image; also `.jpeg`, `.png`, `.webp`), `000000012.txt` (the caption) and
optionally `000000012.json` (metadata, unused). `TarSamples` indexes the members' offsets once (headers only) and
reads a sample's bytes with one seek per member; `ImageSample` turns a sample into a record dict whose `video` is the
decoded image as a one-frame clip (`images.py`), so the t2i pipeline reads it like any clip.

A damaged shard keeps the samples indexed before the damage (logged); a sample without an image or a caption, or
with bytes that do not decode, is a bad record for the pipeline to count.
"""

import dataclasses
import tarfile

from absl import logging

from lumiere_jax.data import images, records

IMAGE_EXTENSIONS = tuple(extension.lstrip('.') for extension in images.EXTENSIONS)
CAPTION_EXTENSION = 'txt'


def split_name(name: str) -> tuple[str, str]:
  """A member name -> (sample key, extension): `a/b/000012.jpg` -> (`a/b/000012`, `jpg`); the key keeps folders."""
  folder, _, base = name.rpartition('/')
  stem, _, extension = base.partition('.')
  return (f'{folder}/{stem}' if folder else stem), extension.lower()


def index_tar(path: str) -> list[tuple[str, dict[str, tuple[int, int]]]]:
  """(key, {extension: (data offset, size)}) per sample of one tar, consecutive members with one key grouped."""
  samples = []
  try:
    with tarfile.open(path, 'r:') as archive:
      for member in archive:
        if not member.isfile() or member.name.rpartition('/')[2].startswith('.'):
          continue
        key, extension = split_name(member.name)
        if not samples or samples[-1][0] != key:
          samples.append((key, {}))
        samples[-1][1][extension] = (member.offset_data, member.size)
  except (tarfile.TarError, OSError) as e:
    logging.warning('WebDataset shard %s is damaged after %d samples (%s); reading those', path, len(samples), e)
  return samples


class TarSamples:
  """Random access to the samples of WebDataset tar shards: element i -> {'__key__', '__url__', extension: bytes}.

  Holds only paths and offsets, so it pickles cheaply into grain's worker processes; each read opens its shard.
  """

  def __init__(self, paths: list[str]):
    self._paths = list(paths)
    self._samples = []  # (shard index, key, {extension: (offset, size)})
    for shard, path in enumerate(self._paths):
      self._samples += [(shard, key, members) for key, members in index_tar(path)]

  def __len__(self) -> int:
    return len(self._samples)

  def __getitem__(self, index: int) -> dict:
    shard, key, members = self._samples[index]
    sample = {'__key__': key, '__url__': self._paths[shard]}
    with open(self._paths[shard], 'rb') as file:
      for extension, (offset, size) in members.items():
        file.seek(offset)
        sample[extension] = file.read(size)
    return sample

  def describe(self, index: int) -> str:
    """Where element `index` lives, for error messages."""
    shard, key, _ = self._samples[index]
    return f'tar {self._paths[shard]} sample {key!r}'

  def __repr__(self) -> str:
    return f'TarSamples({len(self._paths)} shards, {len(self)} samples)'


@dataclasses.dataclass(frozen=True)
class ImageSample:
  """A WebDataset sample -> a record dict holding its image as a one-frame clip (uint8 (1, H, W, 3))."""

  min_side: int = images.MIN_SIDE
  max_pixels: int = images.MAX_PIXELS

  def __call__(self, sample: dict) -> dict:
    key = sample.get('__key__', '')
    extension = next((extension for extension in IMAGE_EXTENSIONS if extension in sample), None)
    if extension is None:
      raise records.BadRecordError('missing field', f'no image ({", ".join(IMAGE_EXTENSIONS)}) in sample {key!r}: '
                                                    f'has {sorted(name for name in sample if name[:2] != "__")}')
    if CAPTION_EXTENSION not in sample:
      raise records.BadRecordError('missing field', f'no caption (.{CAPTION_EXTENSION}) in sample {key!r}')
    try:
      caption = sample[CAPTION_EXTENSION].decode('utf-8').strip()
    except UnicodeDecodeError as e:
      raise records.BadRecordError('bad field', f'caption of {key!r} is not UTF-8: {e}') from e
    if not caption:
      raise records.BadRecordError('empty caption', key)
    rgb = images.decode_image(sample[extension], min_side=self.min_side, max_pixels=self.max_pixels)
    return dict(key=key, caption=caption, video=images.as_clip(rgb), fps=images.IMAGE_FPS, num_frames=1,
                height=rgb.shape[0], width=rgb.shape[1])
