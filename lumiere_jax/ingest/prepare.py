"""`lumiere-data prepare`: a video collection -> ArrayRecord training shards (`records.py` schema) + `manifest.json`.

Three phases, whose output is the same bytes whatever the worker count:
1. plan (parallel over inputs): read each video's stream header and packet times (decoding one frame) and cut it, or
   its manifest span, into `clip_seconds` clips keyed `{name}#{index}`; or say why it is skipped;
2. group: a clip goes to shard sha256(key) mod num_shards, and a shard holds its clips in key order;
3. write (parallel over shards): decode each clip's span (after a seek), take the source frame nearest in time to
   each storage frame (any constant or variable source rate), resize to `size` on the shortest side (applying the
   stream's rotation), re-encode with `video.encode_mp4`, rename the finished shard into place, then write its marker
   `done/NAME.json` (records, seconds, skipped clips, a digest of its plan).

One input's failure (at any phase: header, decode, resize, encode) skips that input or clip with its reason
(`clips.py`); only a problem of the run itself (options, `--out`, a full disk) stops it, with a `PrepareError` or an
`OSError`. A rerun skips shards whose marker matches their plan and deletes hidden temporary files, so an interrupted
run resumes without duplicating clips. `prepare_state.json` pins the options (and the shard count) of the first run
that writes a clip; a rerun with other options is refused (a run that wrote no clip pins nothing and leaves only its
`manifest.json`). `manifest.json` is written last.
"""

import collections
from collections.abc import Callable, Iterable
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

from lumiere_jax import progress
from lumiere_jax.data import records
from lumiere_jax.ingest import clips as clips_lib, inputs as inputs_lib
from lumiere_jax.ingest.clips import Clip
from lumiere_jax.ingest.inputs import PrepareError, Skip
from lumiere_jax.ingest.options import Options

PREFIX = 'clips'
CLIPS_PER_SHARD = 1000  # the default shard count aims at this many clips per shard
STATE, MANIFEST, DONE = 'prepare_state.json', 'manifest.json', 'done'


def write_shard(out: str, name: str, clips: list[Clip], options: Options) -> dict:
  """Encodes the clips (in key order) into shard `name` under `out`, published by a rename; returns its marker."""
  out = pathlib.Path(out)
  marker = dict(records=0, seconds=0.0, plan=clips_lib.plan_digest(clips, options), skipped=[])
  with records.atomic_shard(out / name) as writer:
    for clip in clips:
      try:
        writer.write(clips_lib.encoded_record(clip, options))
      except Skip as e:
        marker['skipped'].append(dict(path=clip.display, key=clip.key, reason=str(e)))
        continue
      marker['records'] += 1
      marker['seconds'] += clip.num_frames / options.fps
  _write_json(out / DONE / f'{name}.json', marker)
  return marker


def prepare(options: Options, out: str | os.PathLike, *, workers: int | None = None,
            log: Callable[[str], None] = print) -> dict:
  """Writes (or completes) the shards and `manifest.json` under `out`; returns the manifest.

  `PrepareError` when the options cannot work, differ from those `out` was started with, `out` cannot be written, or
  another run holds it. No single input stops the run: each one that fails is listed in the manifest's `skipped`.
  """
  options = options.checked()
  out = pathlib.Path(out).expanduser().absolute()
  with _lock(out), _pool(workers or os.cpu_count() or 1) as parallel_map:
    num_shards = _pinned_shards(out, options)
    inputs = inputs_lib.collect_inputs(videos=options.videos, captions=options.captions, manifest=options.manifest)
    clips, skipped = [], []
    plans = parallel_map(functools.partial(clips_lib.plan_input, options=options), inputs, chunksize=8)
    for item, (planned, reason) in progress.track(zip(inputs, plans), 'planning: reading the inputs\' headers',
                                                  total=len(inputs), log=log):
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
    collect_markers(todo, parallel_map(functools.partial(_write_task, out=str(out), options=options), todo), markers,
                    log=log, unit='clips')
    manifest = _manifest(len(inputs), skipped, markers, options)
    if not manifest['counts']['clips_written']:
      _unpin(out, shards)
      manifest['shards'] = []
    _write_json(out / MANIFEST, manifest)
  return manifest


def collect_markers(todo: list, written: Iterable[dict], markers: dict, *, log: Callable[[str], None],
                    unit: str) -> None:
  """Puts the marker of each shard of `todo` into `markers` as `written` yields it (in order), with progress lines."""
  shards = progress.Progress(len(todo), 'writing shards', log=log)
  for (name, _), marker in zip(todo, written):
    markers[name] = marker
    shards.advance(note=f'(last: {name}, {marker["records"]} {unit})')


def shard_of(key: str, num_shards: int) -> int:
  """The shard of a clip: a stable hash of its key (never Python's salted `hash`)."""
  return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], 'big') % num_shards


def _write_task(task: tuple[str, list[Clip]], *, out: str, options: Options) -> dict:
  return write_shard(out, *task, options)


def _marker(out: pathlib.Path, name: str, clips: list[Clip], options: Options) -> dict | None:
  """The done marker of a complete shard with this very plan, else None (the shard is to be written)."""
  path = out / DONE / f'{name}.json'
  if not (out / name).exists() or not path.exists():
    return None
  marker = json.loads(path.read_text())
  return marker if marker['plan'] == clips_lib.plan_digest(clips, options) else None


def _pinned_shards(out: pathlib.Path, options: Options) -> int | None:
  """The shard count of the run that started `out`, refusing other options; None for a fresh `out`."""
  state = out / STATE
  if not state.exists():
    visible = [path.name for path in out.iterdir() if not path.name.startswith('.') and path.name != MANIFEST]
    if visible:
      raise PrepareError(f'--out {out} holds {visible[:3]} but no {STATE}: give an empty or new folder')
    return None
  saved = json.loads(state.read_text())
  for field, value in dataclasses.asdict(options).items():
    if saved['options'].get(field) != value:
      raise PrepareError(f'{out} was prepared with --{field}={saved["options"].get(field)!r}, this run has '
                         f'--{field}={value!r}: rerun with the same options to resume, or use another --out')
  return saved['num_shards']


def _unpin(out: pathlib.Path, shards: dict) -> None:
  """Removes what a run that wrote no clip left but its manifest, so that a rerun may change the options."""
  for name in shards:
    (out / name).unlink(missing_ok=True)
    (out / DONE / f'{name}.json').unlink(missing_ok=True)
  if (out / DONE).is_dir() and not any((out / DONE).iterdir()):
    (out / DONE).rmdir()
  (out / STATE).unlink()


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
  """One line: clips written, their duration, skipped inputs by reason, where the manifest is."""
  counts = manifest['counts']
  skipped = f' ({skip_reasons(manifest)})' if counts['skipped'] else ''
  return (f'wrote {counts["clips_written"]} clips ({_duration(manifest["seconds"])} of video) from '
          f'{counts["inputs"]} inputs in {len(manifest["shards"])} shards; skipped {counts["skipped"]}{skipped}; '
          f'manifest: {pathlib.Path(out) / MANIFEST}')


def no_clips(manifest: dict) -> str:
  """Why a run wrote no clip, with the flags that would help when its inputs were too short."""
  short = any(entry['reason'].startswith(('shorter than one clip', 'too short')) for entry in manifest['skipped'])
  hint = (f'; for inputs shorter than --clip_seconds={manifest["options"]["clip_seconds"]:g}, give a smaller '
          '--clip_seconds, or --keep_tail to keep a shorter last clip (at least --min_seconds / --min_frames)'
          if short else '')
  return f'no clips written: {skip_reasons(manifest)}{hint}'


def _duration(seconds: float) -> str:
  """`12.5 s`, `3.2 min` or `4.10 h`: never rounded to nothing."""
  if seconds < 60:
    return f'{seconds:.1f} s'
  return f'{seconds / 60:.1f} min' if seconds < 3600 else f'{seconds / 3600:.2f} h'


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
  """Holds `out` (creating it) for this run: two runs on one folder would write the same shards."""
  try:
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / '.prepare.lock', 'w')
  except OSError as e:
    where = '' if e.filename in (None, str(out)) else f': {e.filename}'
    raise PrepareError(f'--out {out} is a file, not a folder' if out.is_file() else
                       f'--out {out}: cannot write there ({e.strerror}{where})') from e
  with handle:
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
