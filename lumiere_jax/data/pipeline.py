"""The grain input pipeline: ArrayRecord clips -> checkpointable batches of normalised video and tokens.

Per process: source -> records [process_index::process_count] -> shuffle -> repeat (reshuffled each epoch) ->
`ClipTransform` (decode, temporal sampling at `data.fps`, resize/crop, normalise, tokenize; a random window seeded by
element index, so resume is exact) -> thread prefetch -> optional worker processes -> `BatchIterator` in the main
process, which drops bad records, counts them, stops the job above `data.max_bad_fraction`, and batches.

Batches are dicts of NumPy arrays: `video` float32 (b, T, H, W, 3) in [-1, 1], `tokens` int32 (b, L),
`token_mask` bool (b, L), with b = train.batch_size // process_count and T = 1 for the t2i stage (one random frame
per clip), model.num_frames otherwise.
"""

import collections
import dataclasses
import glob
import os

import grain
import numpy as np

from lumiere_jax.data import records, synthetic, tokenizers, transforms, video

DEFAULT_DATA_DIR = '~/.cache/lumiere_jax'


class BadDataError(RuntimeError):
  """Too large a fraction of the records read was bad (see `data.max_bad_fraction`)."""


@dataclasses.dataclass(frozen=True)
class ClipTransform(grain.transforms.RandomMap):
  """Record bytes -> model-ready example, or a marker `{'bad': reason, 'error': message}` for a bad record."""

  image_size: int
  num_frames: int
  fps: float
  tokenizer: tokenizers.ByteTokenizer
  train: bool

  def random_map(self, element: bytes, rng: np.random.Generator) -> dict:
    try:
      return self._example(element, rng if self.train else None)
    except records.BadRecordError as e:
      return {'bad': e.reason, 'error': str(e)}

  def _example(self, data: bytes, rng: np.random.Generator | None) -> dict:
    record = records.decode_record(data)
    indices = transforms.frame_indices(record['num_frames'], record['fps'], self.fps, self.num_frames, rng)
    frames, _ = video.decode_video(record['video'], max_frames=int(indices[-1]) + 1)
    if len(frames) <= indices[-1]:
      raise records.BadRecordError('too short', f'decoded {len(frames)} of the {record["num_frames"]} frames the '
                                                f'record declares; frame {indices[-1]} needed')
    clip = transforms.normalize(transforms.resize_crop(frames[indices], self.image_size))
    tokens, mask = self.tokenizer.encode([record['caption']])
    return {'video': clip, 'tokens': tokens[0], 'token_mask': mask[0]}


class BatchIterator(grain.DatasetIterator):
  """Skips and counts bad elements, raises `BadDataError` above the allowed fraction, stacks good ones into batches.

  Its state is the parent's state plus the cumulative counts, so `get_state`/`set_state` (and orbax through
  `grain.checkpoint.CheckpointSave/Restore`) resume both the data position and the bad-record accounting.
  """

  def __init__(self, parent: grain.DatasetIterator, batch_size: int, max_bad_fraction: float):
    super().__init__(parent)
    self._batch_size = batch_size
    self._max_bad_fraction = max_bad_fraction
    self._read = self._bad = 0
    self._reasons = collections.Counter()
    self._example = ''

  @property
  def stats(self) -> dict:
    """Records read and bad so far by this process, and the bad ones per reason."""
    return dict(records_read=self._read, records_bad=self._bad, bad_reasons=dict(self._reasons))

  def __next__(self) -> dict[str, np.ndarray]:
    good = []
    while len(good) < self._batch_size:
      element = next(self._parent)
      self._read += 1
      if 'bad' in element:
        self._bad += 1
        self._reasons[element['bad']] += 1
        self._example = element['error']
      else:
        good.append(element)
      if self._read >= self._batch_size and self._bad > self._max_bad_fraction * self._read:
        raise BadDataError(
            f'{self._bad} of {self._read} records read by this process were bad ({self._bad / self._read:.1%}), '
            f'more than data.max_bad_fraction={self._max_bad_fraction}; by reason {dict(self._reasons)}; '
            f'last: {self._example}')
    return {key: np.stack([element[key] for element in good]) for key in good[0]}

  def get_state(self) -> dict:
    return dict(parent=self._parent.get_state(), records_read=self._read, records_bad=self._bad,
                bad_reasons=dict(self._reasons), bad_example=self._example)

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state['parent'])
    self._read, self._bad = state['records_read'], state['records_bad']
    self._reasons = collections.Counter(state['bad_reasons'])
    self._example = state['bad_example']


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
    raise ValueError(f'data.source={config.data.source!r}: no file matches (expected "synthetic" or a glob of '
                     'ArrayRecord shards)')
  return paths


def local_batch_size(config, process_count: int) -> int:
  """This process's share of `train.batch_size`."""
  if config.train.batch_size % process_count:
    raise ValueError(f'train.batch_size={config.train.batch_size} is not divisible by the {process_count} processes')
  return config.train.batch_size // process_count


def _records(config, process_index: int, process_count: int, train: bool) -> grain.MapDataset:
  """This process's records (raw bytes), shuffled in training."""
  ds = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(source_paths(config)))
  ds = ds[process_index::process_count]
  return ds.shuffle(seed=config.data.shuffle_seed) if train else ds


def read_keys(config, *, process_index: int = 0, process_count: int = 1) -> list[str]:
  """Keys of this process's records in first training epoch order (for sharding checks; skips unparsable ones)."""
  keys = []
  for data in _records(config, process_index, process_count, train=True):
    try:
      keys.append(records.decode_record(data)['key'])
    except records.BadRecordError:
      pass
  return keys


def make_train_iterator(config, *, process_index: int = 0, process_count: int = 1,
                        train: bool = True) -> BatchIterator:
  """This process's batch iterator; `train=False` reads each record once, in order, from its first frame."""
  batch_size = local_batch_size(config, process_count)
  ds = _records(config, process_index, process_count, train)
  if train:
    ds = ds.repeat()
  transform = ClipTransform(
      image_size=config.model.image_size, num_frames=1 if config.stage == 't2i' else config.model.num_frames,
      fps=config.data.fps, tokenizer=tokenizers.build_tokenizer(config.text), train=train)
  ds = ds.random_map(transform, seed=config.data.shuffle_seed)
  # Decoding threads per process; the buffer holds about a batch so large clips do not pile up in memory.
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=batch_size))
  if config.data.num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.num_workers))
  return BatchIterator(iter(ds), batch_size, config.data.max_bad_fraction)
