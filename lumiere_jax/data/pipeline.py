"""The grain input pipeline: source elements -> checkpointable batches of uint8 video and captions.

Per process: source (`sources.py`) -> elements [process_index::process_count] -> shuffle -> repeat (reshuffled each
epoch) -> `ClipTransform` (parse, decode, temporal sampling at `data.fps`, square crop and resize, tokenize; a random
window and crop seeded by element index, so resume is exact) -> thread prefetch -> optional worker processes ->
`BatchIterator` in the main process, which drops bad records, counts them, stops the job above
`data.max_bad_fraction` (judged once `data.min_records_for_bad_fraction` records were read, or at the end of finite
data; the error names the last bad records: key, shard and index), and batches.

Batches are dicts of NumPy arrays: `video` uint8 (b, T, H, W, 3) (normalised to [-1, 1] inside the jitted step, so
worker processes, the host and the host-to-device copy move a quarter of float32's bytes), `tokens` int32 (b, L) and
`token_mask` bool (b, L), with b = train.batch_size // process_count and T = `stages.Stage.example_frames`. With
`data.text_embeddings`, `text_emb` float32 (b, L, D) (the records' precomputed encoder outputs, zero-padded) replaces
`tokens` and the text encoder is not run. The conditional stage adds `cond_mask` uint8 (b, T, H, W, 1)
(`ClipTransform`).
"""

import collections
from collections.abc import Callable
import dataclasses

import grain
import numpy as np

from lumiere_jax import stages
from lumiere_jax.data import masks, records, sources, tokenizers, transforms, video


_BAD_RECORDS_NAMED = 3  # the last bad records an error names


class BadDataError(RuntimeError):
  """Too large a fraction of the records read was bad (see `data.max_bad_fraction`)."""


@dataclasses.dataclass(frozen=True)
class _WithSourceIndex(grain.transforms.MapWithIndex):
  """Element -> (its index in the source, element), so a bad record can be named; process i of P reads i, i+P, ...
  of the source; `length` elements (later epochs index on past it)."""

  process_index: int
  process_count: int
  length: int

  def map_with_index(self, index: int, element):
    return self.process_index + index % self.length * self.process_count, element


@dataclasses.dataclass(frozen=True)
class ClipTransform(grain.transforms.RandomMap):
  """(source index, element) -> model-ready example, or a marker `{'bad': reason, 'error': message, 'index':
  source index, 'key': record key or ''}` for a bad record.

  Training takes a random start and crop (`crop='random'`); evaluation (`train=False`) the first frames and the
  centre. With `text_width` set, the record's precomputed caption embeddings replace the tokens. With `mask_weights`
  ((kind, weight) pairs, the conditional stage) each clip gets a mask of a kind drawn by weight: `cond_mask` uint8
  (T, H, W, 1), 1 = given, and `video` becomes the mask's target (`masks.condition`: the cinemagraph's still).
  """

  parse: Callable[[object], dict]
  image_size: int
  num_frames: int
  fps: float
  tokenizer: tokenizers.ByteTokenizer
  train: bool
  crop: str = 'center'
  short_clips: str = 'skip'
  text_width: int = 0
  mask_weights: tuple[tuple[str, float], ...] = ()

  def random_map(self, indexed_element, rng: np.random.Generator) -> dict:
    index, element = indexed_element
    record = {}
    try:
      record = self.parse(element)
      example = self._example(record, rng if self.train else None)
    except records.BadRecordError as e:
      return {'bad': e.reason, 'error': str(e), 'index': index, 'key': str(record.get('key', ''))}
    if self.mask_weights:
      target, _, mask = masks.condition(example['video'], masks.pick_kind(dict(self.mask_weights), rng), rng)
      example.update(video=target, cond_mask=mask.astype(np.uint8))
    return example

  def _frames(self, record: dict, rng: np.random.Generator | None) -> np.ndarray:
    """The clip's uint8 frames at `fps`, decoding only as far as the last one needs."""
    clip, fps = record['video'], record['fps']
    if isinstance(clip, bytes) and record['num_frames']:
      targets = transforms.target_times(record['num_frames'], fps, self.fps, self.num_frames, rng)
      frames, times = video.decode_timed(clip, until=targets[-1])
    else:  # decoded frames, or a video whose length is known only once decoded
      frames, times = (clip, np.arange(len(clip)) / fps) if isinstance(clip, np.ndarray) else video.decode_timed(clip)
      targets = transforms.target_times(len(frames), fps, self.fps, self.num_frames, rng)
    return frames[transforms.nearest_frames(times, targets, self.short_clips)]

  def _example(self, record: dict, rng: np.random.Generator | None) -> dict:
    frames = transforms.crop_square(self._frames(record, rng), rng if self.crop == 'random' else None)
    example = {'video': transforms.resize_square(frames, self.image_size)}
    if self.text_width:
      emb = records.text_embedding(record, self.text_width, self.tokenizer.max_length)
      example['text_emb'] = np.zeros((self.tokenizer.max_length, self.text_width), np.float32)
      example['text_emb'][:len(emb)] = emb
      example['token_mask'] = np.arange(self.tokenizer.max_length) < len(emb)
    else:
      tokens, mask = self.tokenizer.encode([record['caption']])
      example.update(tokens=tokens[0], token_mask=mask[0])
    return example


class BatchIterator(grain.DatasetIterator):
  """Skips and counts bad elements, raises `BadDataError` above the allowed fraction, stacks good ones into batches.

  The fraction is judged once `min_records` records were read (a single bad record among the first few says
  nothing about the data) and when finite data ends. `locate(source index)` names where a bad record lives. Its state
  is the parent's state plus the cumulative counts, so `get_state`/`set_state` (and orbax through
  `grain.checkpoint.CheckpointSave/Restore`) resume both the data position and the bad-record accounting.
  """

  def __init__(self, parent: grain.DatasetIterator, batch_size: int, max_bad_fraction: float, *,
               min_records: int, locate: Callable[[int], str] = str):
    super().__init__(parent)
    self._batch_size = batch_size
    self._max_bad_fraction = max_bad_fraction
    self._min_records = min_records
    self._locate = locate
    self._read = self._bad = 0
    self._reasons = collections.Counter()
    self._example = ''
    self._last_bad = collections.deque(maxlen=_BAD_RECORDS_NAMED)

  @property
  def stats(self) -> dict:
    """Records read and bad so far by this process, and the bad ones per reason."""
    return dict(records_read=self._read, records_bad=self._bad, bad_reasons=dict(self._reasons))

  def __next__(self) -> dict[str, np.ndarray]:
    good = []
    while len(good) < self._batch_size:
      try:
        element = next(self._parent)
      except StopIteration:
        self._check_bad_fraction(at_end=True)
        raise
      self._read += 1
      if 'bad' in element:
        self._bad += 1
        self._reasons[element['bad']] += 1
        self._last_bad.append(element)
        self._example = element['error']
      else:
        good.append(element)
      self._check_bad_fraction()
    return {key: np.stack([element[key] for element in good]) for key in good[0]}

  def _check_bad_fraction(self, at_end: bool = False) -> None:
    if not (at_end or self._read >= self._min_records) or self._bad <= self._max_bad_fraction * self._read:
      return
    named = '; '.join(map(self._describe, self._last_bad)) or self._example
    raise BadDataError(
        f'{self._bad} of {self._read} records read by this process were bad ({self._bad / self._read:.1%}), more '
        f'than data.max_bad_fraction={self._max_bad_fraction} (judged from {self._min_records} records on, '
        f'data.min_records_for_bad_fraction); by reason {dict(self._reasons)}; last bad: {named}')

  def _describe(self, bad: dict) -> str:
    key = f' (key {bad["key"]!r})' if bad['key'] else ''
    return f'{self._locate(bad["index"])}{key}: {bad["error"]}'

  def get_state(self) -> dict:
    return dict(parent=self._parent.get_state(), records_read=self._read, records_bad=self._bad,
                bad_reasons=dict(self._reasons), bad_example=self._example)

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state['parent'])
    self._read, self._bad = state['records_read'], state['records_bad']
    self._reasons = collections.Counter(state['bad_reasons'])
    self._example = state['bad_example']


def local_batch_size(config, process_count: int) -> int:
  """This process's share of `train.batch_size`."""
  if config.train.batch_size % process_count:
    raise ValueError(f'train.batch_size={config.train.batch_size} is not divisible by the {process_count} processes')
  return config.train.batch_size // process_count


def _records(config, process_index: int, process_count: int, train: bool):
  """This process's source elements (shuffled in training) and the parser of one into a record dict.

  Process i reads elements i, i + P, i + 2P, ... of the first N - (N mod P): the processes' slices are disjoint,
  equally long (so their epochs stay in step) and together the whole source but for at most P - 1 elements.
  """
  source, parse = sources.make_source(config)
  usable = len(source) - len(source) % process_count
  if not usable:
    raise ValueError(f'data.source={config.data.source!r} has {len(source)} elements, fewer than the '
                     f'{process_count} processes reading it')
  ds = grain.MapDataset.source(source)[:usable][process_index::process_count]
  ds = ds.map_with_index(_WithSourceIndex(process_index, process_count, len(ds)))
  return (ds.shuffle(seed=config.data.shuffle_seed) if train else ds), parse


def _locator(config) -> Callable[[int], str]:
  """Source index -> where the record lives: 'shard <path> record <i>' for ArrayRecord shards (each shard's length
  read only when a bad record is named), the TFDS split and index otherwise."""
  describe = sources.describer(config)  # WebDataset shards and image mixtures name their own elements
  if describe:
    return describe
  if config.data.source.startswith(sources.TFDS_PREFIX):
    return lambda index: f'{config.data.source} split {config.data.tfds_split!r} element {index}'

  def locate(index: int) -> str:
    for path in sources.source_paths(config):
      length = len(grain.sources.ArrayRecordDataSource([path]))
      if index < length:
        return f'shard {path} record {index}'
      index -= length
    return f'element {index} past the end of data.source'
  return locate


def position_for_process_count(config, saved: list[dict], process_count: int) -> dict:
  """An iterator state for any process of a `process_count`-process job, from the states `saved` by every process of
  a job with another count: the same epoch and the same fraction of it read, in the new slices' order.

  Slices differ between layouts, so within the current epoch some clips may come twice and others not at all; epoch
  boundaries stay where they were. The bad-record counts start again from zero.
  """
  length = len(sources.make_source(config)[0])
  old_slice, new_slice = length // len(saved), length // process_count
  epochs_read = max(state['parent']['next_index'] for state in saved) / old_slice
  return dict(parent=dict(next_index=round(epochs_read * new_slice)), records_read=0, records_bad=0, bad_reasons={},
              bad_example='')


def read_keys(config, *, process_index: int = 0, process_count: int = 1) -> list[str]:
  """Keys of this process's records in first training epoch order (for sharding checks; skips unparsable ones)."""
  ds, parse = _records(config, process_index, process_count, train=True)
  keys = []
  for _, element in ds:
    try:
      keys.append(parse(element)['key'])
    except records.BadRecordError:
      pass
  return keys


def make_train_iterator(config, *, process_index: int = 0, process_count: int = 1,
                        train: bool = True) -> BatchIterator:
  """This process's batch iterator; `train=False` reads each record once, in order, from its first frame."""
  batch_size = local_batch_size(config, process_count)
  ds, parse = _records(config, process_index, process_count, train)
  if train:
    ds = ds.repeat()
  transform = ClipTransform(
      parse=parse, image_size=config.model.image_size,
      num_frames=stages.of(config).example_frames(config), fps=config.data.fps,
      tokenizer=tokenizers.build_tokenizer(config.text), train=train, crop=config.data.crop if train else 'center',
      short_clips=config.data.short_clips, text_width=config.text.width if config.data.text_embeddings else 0,
      mask_weights=tuple(config.conditional.items()) if stages.of(config).reads_mask else ())
  ds = ds.random_map(transform, seed=config.data.shuffle_seed)
  # Decoding threads per process; the buffer holds about a batch so large clips do not pile up in memory.
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=batch_size))
  if config.data.num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.num_workers))
  min_records = config.data.min_records_for_bad_fraction
  return BatchIterator(iter(ds), batch_size, config.data.max_bad_fraction, min_records=min_records,
                       locate=_locator(config))
