"""The grain input pipeline: source elements -> checkpointable batches of uint8 video and captions.

Per process: source (`sources.py`) -> elements [process_index::process_count] -> shuffle -> repeat (reshuffled each
epoch) -> `ClipTransform` (parse, decode, temporal sampling at `data.fps`, square crop and resize, tokenize; a random
window and crop seeded by element index, so resume is exact) -> thread prefetch -> optional worker processes ->
`BatchIterator` in the main process, which drops bad records, counts them, stops the job above
`data.max_bad_fraction`, and batches.

Batches are dicts of NumPy arrays: `video` uint8 (b, T, H, W, 3) (normalised to [-1, 1] inside the jitted step, so
worker processes, the host and the host-to-device copy move a quarter of float32's bytes), `tokens` int32 (b, L) and
`token_mask` bool (b, L), with b = train.batch_size // process_count and T = `clip_frames(config)`. With
`data.text_embeddings`, `text_emb` float32 (b, L, D) (the records' precomputed encoder outputs, zero-padded) replaces
`tokens` and the text encoder is not run. The conditional stage adds `cond_mask` uint8 (b, T, H, W, 1)
(`ClipTransform`).
"""

import collections
from collections.abc import Callable
import dataclasses

import grain
import numpy as np

from lumiere_jax.data import masks, records, sources, tokenizers, transforms, video


class BadDataError(RuntimeError):
  """Too large a fraction of the records read was bad (see `data.max_bad_fraction`)."""


@dataclasses.dataclass(frozen=True)
class ClipTransform(grain.transforms.RandomMap):
  """Source element -> model-ready example, or a marker `{'bad': reason, 'error': message}` for a bad record.

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

  def random_map(self, element, rng: np.random.Generator) -> dict:
    try:
      example = self._example(self.parse(element), rng if self.train else None)
    except records.BadRecordError as e:
      return {'bad': e.reason, 'error': str(e)}
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


def clip_frames(config) -> int:
  """Frames per training example: one random frame for t2i, a random window of sr.window frames for the SSR (its
  low-res input is made from the same frames in the train step), model.num_frames for the base stage."""
  return {'t2i': 1, 'ssr': config.sr.window}.get(config.stage, config.model.num_frames)


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
  return (ds.shuffle(seed=config.data.shuffle_seed) if train else ds), parse


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
  for element in ds:
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
      num_frames=clip_frames(config), fps=config.data.fps,
      tokenizer=tokenizers.build_tokenizer(config.text), train=train, crop=config.data.crop if train else 'center',
      short_clips=config.data.short_clips, text_width=config.text.width if config.data.text_embeddings else 0,
      mask_weights=tuple(config.conditional.items()) if config.stage == 'conditional' else ())
  ds = ds.random_map(transform, seed=config.data.shuffle_seed)
  # Decoding threads per process; the buffer holds about a batch so large clips do not pile up in memory.
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=batch_size))
  if config.data.num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.num_workers))
  return BatchIterator(iter(ds), batch_size, config.data.max_bad_fraction)
