"""`lumiere-data prepare`: a video collection -> ArrayRecord training shards (`records.py` schema) + `manifest.json`.

Three phases, whose output is the same bytes whatever the worker count:
1. plan (parallel over inputs): read each video's stream header and packet times (decoding one frame) and cut it, or
   its manifest span, into `clip_seconds` clips keyed `{name}#{index}`; or say why it is skipped;
2. group: a clip goes to shard sha256(key) mod num_shards, and a shard holds its clips in key order;
3. write (parallel over shards): decode each clip's span (after a seek), take the source frame nearest in time to
   each storage frame (any constant or variable source rate), resize to `size` on the shortest side (applying the
   stream's rotation), re-encode with `video.encode_mp4`, rename the finished shard into place, then write its marker
   `done/NAME.json` (records, seconds, skipped clips, a digest of its plan).

A rerun skips shards whose marker matches their plan and deletes hidden temporary files, so an interrupted run resumes
without duplicating clips. `prepare_state.json` pins the options (and the shard count) of the first run; a rerun
with other options is refused. `manifest.json` is written last.
"""

import collections
from collections.abc import Callable
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import math
import multiprocessing
import os
import pathlib
import re

from array_record.python import array_record_module
import av
import numpy as np

from lumiere_jax.data import ingest_inputs, records, video
from lumiere_jax.data.ingest_inputs import Input, PrepareError

PREFIX = 'clips'
CLIPS_PER_SHARD = 1000  # the default shard count aims at this many clips per shard
STATE, MANIFEST, DONE = 'prepare_state.json', 'manifest.json', 'done'


@dataclasses.dataclass(frozen=True)
class Options:
  """Everything the output depends on (the worker count is not part of it); see `cli/data.py` for each flag."""

  videos: str = ''
  captions: str = ''
  manifest: str = ''
  clip_seconds: float = 5.0
  fps: float = 16.0
  size: int = 128
  min_seconds: float = 1.0
  min_frames: int = 8
  min_size: int = 0
  max_pixels: int = 8192 * 4320
  keep_tail: bool = False
  num_shards: int = 0

  def checked(self) -> 'Options':
    """These options with absolute paths; `PrepareError` naming the flag when they cannot work."""
    if bool(self.manifest) == bool(self.videos or self.captions) or bool(self.videos) != bool(self.captions):
      raise PrepareError('give either --manifest FILE, or --videos DIR and --captions FILE')
    for flag in ('videos', 'captions', 'manifest'):
      if getattr(self, flag) and not os.path.exists(getattr(self, flag)):
        raise PrepareError(f'--{flag} {getattr(self, flag)}: no such file or folder')
    frames = round(self.clip_seconds * self.fps)
    for wrong, message in ((self.fps <= 0, '--fps must be > 0'), (self.size < 0, '--size must be >= 0'),
                           (frames < max(1, self.min_frames), f'--clip_seconds x --fps = {frames} frames, fewer '
                                                               f'than --min_frames {self.min_frames}'),
                           (self.clip_seconds < self.min_seconds, '--clip_seconds is below --min_seconds'),
                           (self.num_shards < 0, '--num_shards must be >= 0 (0: automatic)')):
      if wrong:
        raise PrepareError(message)
    paths = {flag: os.path.abspath(getattr(self, flag)) for flag in ('videos', 'captions', 'manifest')
             if getattr(self, flag)}
    return dataclasses.replace(self, **paths)


@dataclasses.dataclass(frozen=True)
class Clip:
  """One clip to write: source frames from `time` (seconds, source clock), stored as `height` x `width` frames after
  `quarter_turns` counterclockwise rotations."""

  key: str
  path: str
  display: str
  caption: str
  time: float
  num_frames: int
  height: int
  width: int
  quarter_turns: int


def plan_input(item: Input, options: Options) -> tuple[list[Clip], str]:
  """The input's clips, or ([], why it is skipped)."""
  if item.problem:
    return [], item.problem
  try:
    found = ingest_inputs.probe(item.path, max_pixels=options.max_pixels, min_size=options.min_size)
    return _cut(item, *found, options), ''
  except ingest_inputs.Skip as e:
    return [], str(e)


def _cut(item: Input, first: float, duration: float, height: int, width: int, turns: int,
         options: Options) -> list[Clip]:
  """Consecutive clips over the input's span; a tail shorter than a clip only with --keep_tail, if long enough."""
  start = item.start or 0.0
  span = (duration if item.end is None else min(item.end, duration)) - start
  if span <= 0:
    raise ingest_inputs.Skip(f'start {start:g} s is past the end ({duration:.2f} s)')
  full = int(span / options.clip_seconds + 1e-9)
  lengths = [round(options.clip_seconds * options.fps)] * full
  tail = int((span - full * options.clip_seconds) * options.fps + 1e-6)
  if options.keep_tail and tail >= max(options.min_frames, options.min_seconds * options.fps - 1e-6, 1):
    lengths.append(tail)
  if not lengths:
    raise ingest_inputs.Skip(
        f'too short ({span:.2f} s; --min_seconds {options.min_seconds:g}, --min_frames {options.min_frames})'
        if options.keep_tail else f'shorter than one clip ({span:.2f} s < {options.clip_seconds:g} s)')
  scale = options.size / min(height, width) if options.size else 1.0
  even = [max(2, 2 * round(side * scale / 2)) for side in (height, width)]
  height, width = even[::-1] if turns % 2 else even
  return [Clip(f'{item.name}#{i}', item.path, item.display, item.caption, first + start + i * options.clip_seconds,
               n, height, width, turns) for i, n in enumerate(lengths)]


def shard_of(key: str, num_shards: int) -> int:
  """The shard of a clip: a stable hash of its key (never Python's salted `hash`)."""
  return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], 'big') % num_shards


def _plan_digest(clips: list[Clip], options: Options) -> str:
  return hashlib.sha256(json.dumps([options.fps, *map(dataclasses.astuple, clips)]).encode()).hexdigest()


def write_shard(out: str, name: str, clips: list[Clip], options: Options) -> dict:
  """Encodes the clips (in key order) into shard `name` under `out`, published by a rename; returns its marker."""
  out = pathlib.Path(out)
  temp = out / f'.{name}.tmp-{os.getpid()}'
  writer = array_record_module.ArrayRecordWriter(str(temp), 'group_size:1')
  marker = dict(records=0, seconds=0.0, plan=_plan_digest(clips, options), skipped=[])
  try:
    for clip in clips:
      try:
        frames = ingest_inputs.read_frames(clip.path, clip.time + np.arange(clip.num_frames) / options.fps,
                                           clip.height, clip.width, clip.quarter_turns)
      except (ingest_inputs.Skip, av.error.FFmpegError) as e:
        reason = str(e) if isinstance(e, ingest_inputs.Skip) else f'undecodable: {e.strerror or e}'
        marker['skipped'].append(dict(path=clip.display, key=clip.key, reason=reason))
        continue
      writer.write(records.encode_record(
          key=clip.key, caption=clip.caption, video=video.encode_mp4(frames, options.fps), fps=options.fps,
          num_frames=len(frames), height=clip.height, width=clip.width))
      marker['records'] += 1
      marker['seconds'] += len(frames) / options.fps
  except BaseException:
    writer.close()
    temp.unlink(missing_ok=True)
    raise
  writer.close()
  os.replace(temp, out / name)
  _write_json(out / DONE / f'{name}.json', marker)
  return marker


def prepare(options: Options, out: str | os.PathLike, *, workers: int | None = None,
            log: Callable[[str], None] = print) -> dict:
  """Writes (or completes) the shards and `manifest.json` under `out`; returns the manifest.

  `PrepareError` when the options cannot work, differ from those `out` was started with, or another run holds `out`.
  """
  options = options.checked()
  out = pathlib.Path(out).expanduser().absolute()
  out.mkdir(parents=True, exist_ok=True)
  with _lock(out), _pool(workers or os.cpu_count() or 1) as parallel_map:
    num_shards = _pinned_shards(out, options)
    inputs = ingest_inputs.collect_inputs(videos=options.videos, captions=options.captions, manifest=options.manifest)
    clips, skipped = [], []
    plans = parallel_map(functools.partial(plan_input, options=options), inputs, chunksize=8)
    for item, (planned, reason) in zip(inputs, plans):
      clips += planned
      skipped += [item.report(reason)] if reason else []
    if num_shards is None:
      num_shards = options.num_shards or max(1, math.ceil(len(clips) / CLIPS_PER_SHARD))
      _write_json(out / STATE, dict(options=dataclasses.asdict(options), num_shards=num_shards))
    for stale in [*out.glob('.*.tmp-*'), *out.glob(f'{DONE}/.*.tmp-*')]:  # left by an interrupted run
      stale.unlink()
    shards = {records.shard_name(PREFIX, i, num_shards): [] for i in range(num_shards)}
    for clip in sorted(clips, key=lambda clip: clip.key):
      shards[records.shard_name(PREFIX, shard_of(clip.key, num_shards), num_shards)].append(clip)
    markers = {name: _marker(out, name, shard, options) for name, shard in shards.items()}
    todo = [(name, shards[name]) for name, marker in markers.items() if marker is None]
    log(f'{len(inputs)} inputs: {len(clips)} clips planned, {len(skipped)} inputs skipped; writing {len(todo)} of '
        f'{num_shards} shards')
    written = parallel_map(functools.partial(_write_task, out=str(out), options=options), todo)
    for count, ((name, _), marker) in enumerate(zip(todo, written), 1):
      markers[name] = marker
      log(f'shard {count}/{len(todo)} written: {name} ({marker["records"]} clips)')
    manifest = _manifest(len(inputs), skipped, markers, options)
    _write_json(out / MANIFEST, manifest)
  return manifest


def _write_task(task: tuple[str, list[Clip]], *, out: str, options: Options) -> dict:
  return write_shard(out, *task, options)


def _marker(out: pathlib.Path, name: str, clips: list[Clip], options: Options) -> dict | None:
  """The done marker of a complete shard with this very plan, else None (the shard is to be written)."""
  path = out / DONE / f'{name}.json'
  if not (out / name).exists() or not path.exists():
    return None
  marker = json.loads(path.read_text())
  return marker if marker['plan'] == _plan_digest(clips, options) else None


def _pinned_shards(out: pathlib.Path, options: Options) -> int | None:
  """The shard count of the run that started `out`, refusing other options; None for a fresh `out`."""
  state = out / STATE
  if not state.exists():
    visible = [path.name for path in out.iterdir() if not path.name.startswith('.')]
    if visible:
      raise PrepareError(f'--out {out} holds {visible[:3]} but no {STATE}: give an empty or new folder')
    return None
  saved = json.loads(state.read_text())
  for field, value in dataclasses.asdict(options).items():
    if saved['options'].get(field) != value:
      raise PrepareError(f'{out} was prepared with --{field}={saved["options"].get(field)!r}, this run has '
                         f'--{field}={value!r}: rerun with the same options to resume, or use another --out')
  return saved['num_shards']


def _manifest(num_inputs: int, skipped: list[dict], markers: dict, options: Options) -> dict:
  skipped = sorted(skipped + [entry for marker in markers.values() for entry in marker['skipped']],
                   key=lambda entry: (entry['path'], entry.get('key', ''), entry['reason']))
  return dict(
      counts=dict(inputs=num_inputs, clips_written=sum(marker['records'] for marker in markers.values()),
                  skipped=len(skipped)),
      seconds=round(sum(marker['seconds'] for marker in markers.values()), 3),
      options=dataclasses.asdict(options),
      shards=[dict(name=name, clips=marker['records']) for name, marker in markers.items()],
      skipped=skipped)


def summary(manifest: dict, out: str | os.PathLike) -> str:
  """One line: clips written, hours of video, skipped inputs by reason, where the manifest is."""
  counts = manifest['counts']
  skipped = f' ({skip_reasons(manifest)})' if counts['skipped'] else ''
  return (f'wrote {counts["clips_written"]} clips ({manifest["seconds"] / 3600:.2f} h of video) from '
          f'{counts["inputs"]} inputs in {len(manifest["shards"])} shards; skipped {counts["skipped"]}{skipped}; '
          f'manifest: {pathlib.Path(out) / MANIFEST}')


def skip_reasons(manifest: dict) -> str:
  """The skipped inputs and clips counted by reason (its words before any specifics)."""
  reasons = collections.Counter(re.split(r' \(|:', entry['reason'])[0] for entry in manifest['skipped'])
  return ', '.join(f'{reason}: {count}' for reason, count in reasons.most_common()) or 'no inputs'


@contextlib.contextmanager
def _pool(workers: int):
  """`map(fn, items, chunksize=)` in order over up to `workers` spawned processes (this one when workers <= 1)."""
  if workers <= 1:
    yield lambda fn, items, chunksize=1: map(fn, items)
    return
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
    try:
      yield pool.map
    except BaseException:  # Ctrl-C or an error: start nothing more
      pool.shutdown(wait=False, cancel_futures=True)
      raise


@contextlib.contextmanager
def _lock(out: pathlib.Path):
  """Holds `out` for this run: two runs on one folder would write the same shards."""
  with open(out / '.prepare.lock', 'w') as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      raise PrepareError(f'another lumiere-data prepare is writing {out}') from e
    yield


def _write_json(path: pathlib.Path, value) -> None:
  """Writes JSON atomically (a temporary file renamed over the target)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  temp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
  temp.write_text(json.dumps(value, indent=1) + '\n')
  os.replace(temp, path)
