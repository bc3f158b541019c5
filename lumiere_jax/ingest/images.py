"""`lumiere-data prepare --images DIR --captions FILE --out OUT`: image-caption pairs -> ArrayRecord training shards.

Each image becomes a one-frame clip record (`records.py` schema, `num_frames=1`, `fps=images.IMAGE_FPS`): decoded by
`data/images.py` (EXIF orientation applied; CMYK, grey, palette, 16-bit and transparent images made RGB), resized to
`size` on its shortest side (sides even, as H.264 needs) and stored as a one-frame MP4 by `video.encode_mp4`, so the
training pipeline has a single decode path for videos and images. The t2i stage reads such shards alone
(`data.source`) or mixed with video clips (`data.image_source`).

The captions file is the table `prepare` reads for videos (CSV `path,caption` or JSON Lines; paths relative to
`--images`). The run has the shape of the video one (`prepare.py`): hash-assigned shards, parallel writes, done
markers, resume, options pinned by the first run that writes a record, `manifest.json` last. An input that cannot be
used (no caption row, missing, zero bytes, corrupt or truncated, smaller than `min_size`, a declared size above
`max_pixels` checked before decoding) is listed as skipped with its reason; no image stops the run.
"""

import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib

import numpy as np
from PIL import Image

from lumiere_jax.data import images as image_lib, records, video
from lumiere_jax.ingest import inputs as inputs_lib, prepare, video_reader
from lumiere_jax.ingest.clips import MAX_SIDE
from lumiere_jax.ingest.inputs import Input, PrepareError, Skip

IMAGES_PER_SHARD = 10000  # the default shard count aims at this many images per shard


@dataclasses.dataclass(frozen=True)
class ImageOptions:
  """Everything the output depends on; see `cli/data.py` for each flag."""

  images: str = ''
  captions: str = ''
  size: int = 128
  min_size: int = image_lib.MIN_SIDE
  max_pixels: int = image_lib.MAX_PIXELS
  num_shards: int = 0

  def checked(self) -> 'ImageOptions':
    """These options with absolute paths; `PrepareError` naming the flag when they cannot work."""
    for flag, is_kind, kind in (('images', os.path.isdir, 'folder'), ('captions', os.path.isfile, 'file')):
      path = getattr(self, flag)
      if not path:
        raise PrepareError('give --images DIR and --captions FILE')
      if not is_kind(path):
        raise PrepareError(f'--{flag} {path}: not a {kind}' if os.path.exists(path) else
                           f'--{flag} {path}: no such file or folder')
    for wrong, message in ((self.size < 0, '--size must be >= 0'), (self.min_size < 1, '--min_size must be >= 1'),
                           (self.max_pixels < 1, '--max_pixels must be >= 1'),
                           (self.num_shards < 0, '--num_shards must be >= 0 (0: automatic)')):
      if wrong:
        raise PrepareError(message)
    return dataclasses.replace(self, images=os.path.abspath(self.images), captions=os.path.abspath(self.captions))


def collect_images(options: ImageOptions) -> list[Input]:
  """One input per caption row, plus each image file under `--images` without one (reported, not dropped)."""
  inputs = []
  for item in inputs_lib.collect_inputs(videos=options.images, captions=options.captions):
    if not item.problem and (item.start is not None or item.end is not None):
      item = dataclasses.replace(item, problem='start/end given for an image')
    inputs.append(item)
  listed = {item.path for item in inputs}
  for root, folders, files in os.walk(options.images):
    folders[:] = sorted(folder for folder in folders if not folder.startswith('.'))
    for name in sorted(files):
      path = os.path.normpath(os.path.join(root, name))
      is_image = os.path.splitext(name)[1].lower() in image_lib.EXTENSIONS
      if path not in listed and is_image and not name.startswith('.'):
        display = pathlib.Path(os.path.relpath(path, options.images)).as_posix()
        inputs.append(Input(path, display, display,
                            problem=f'no caption row in {os.path.basename(options.captions)}'))
  return inputs


def image_record(item: Input, options: ImageOptions) -> bytes:
  """The image as a one-frame clip record; `Skip` with the reason when it cannot be used."""
  video_reader.check_file(item.path)
  try:
    rgb = image_lib.decode_image(pathlib.Path(item.path).read_bytes(), min_side=options.min_size,
                                 max_pixels=options.max_pixels)
  except records.BadRecordError as e:
    raise Skip(str(e)) from e
  except OSError as e:
    raise Skip(f'unreadable: {e.strerror or e}') from e
  height, width = stored_size(*rgb.shape[:2], options.size)
  if max(height, width) > MAX_SIDE:
    raise Skip(f'output too large ({width}x{height}; the H.264 encoder takes at most {MAX_SIDE} pixels a side)')
  try:
    frame = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS))
    with video_reader.ffmpeg_messages():
      encoded = video.encode_mp4(frame[None], image_lib.IMAGE_FPS)
  except Exception as e:  # a resize or encoder failure (memory, a size it refuses) skips this image only
    raise Skip(f'not encodable: {type(e).__name__}: {video_reader.cause(e)}') from e
  return records.encode_record(key=item.name, caption=item.caption, video=encoded, fps=image_lib.IMAGE_FPS,
                               num_frames=1, height=height, width=width)


def stored_size(height: int, width: int, size: int) -> tuple[int, int]:
  """(height, width) with the shortest side `size` (0: as is), aspect kept, both even and >= 2."""
  scale = size / min(height, width) if size else 1.0
  return tuple(max(2, 2 * round(side * scale / 2)) for side in (height, width))


def _digest(items: list[Input], options: ImageOptions) -> str:
  """What a shard of these inputs holds: its done marker is valid for this very plan only."""
  plan = [dataclasses.asdict(options), *((item.name, item.path, item.caption) for item in items)]
  return hashlib.sha256(json.dumps(plan).encode()).hexdigest()


def write_shard(out: str, name: str, items: list[Input], options: ImageOptions) -> dict:
  """Encodes the inputs (in key order) into shard `name` under `out`, published by a rename; returns its marker."""
  out = pathlib.Path(out)
  marker = dict(records=0, seconds=0.0, plan=_digest(items, options), skipped=[])
  with records.atomic_shard(out / name) as writer:
    for item in items:
      try:
        writer.write(image_record(item, options))
      except Skip as e:
        marker['skipped'].append(dict(path=item.display, key=item.name, reason=str(e)))
        continue
      marker['records'] += 1
  prepare._write_json(out / prepare.DONE / f'{name}.json', marker)
  return marker


def _write_task(task: tuple[str, list[Input]], *, out: str, options: ImageOptions) -> dict:
  return write_shard(out, *task, options)


def prepare_images(options: ImageOptions, out: str | os.PathLike, *, workers: int | None = None,
                   log=print) -> dict:
  """Writes (or completes) the shards and `manifest.json` under `out`; returns the manifest (see the module doc)."""
  options = options.checked()
  out = pathlib.Path(out).expanduser().absolute()
  with prepare._lock(out), prepare._pool(workers or os.cpu_count() or 1) as parallel_map:
    num_shards = prepare._pinned_shards(out, options)
    inputs = collect_images(options)
    usable = sorted((item for item in inputs if not item.problem), key=lambda item: item.name)
    skipped = [item.report(item.problem) for item in inputs if item.problem]
    if num_shards is None:
      num_shards = options.num_shards or max(1, math.ceil(len(usable) / IMAGES_PER_SHARD))
      prepare._write_json(out / prepare.STATE, dict(options=dataclasses.asdict(options), num_shards=num_shards))
    for stale in [*out.glob('.*.tmp-*'), *out.glob(f'{prepare.DONE}/.*.tmp-*')]:  # left by an interrupted run
      stale.unlink()
    shards = {records.shard_name(prepare.PREFIX, i, num_shards): [] for i in range(num_shards)}
    for item in usable:
      shards[records.shard_name(prepare.PREFIX, prepare.shard_of(item.name, num_shards), num_shards)].append(item)
    markers = {name: _done(out, name, items, options) for name, items in shards.items()}
    todo = [(name, shards[name]) for name, marker in markers.items() if marker is None]
    log(f'{len(inputs)} inputs: {len(usable)} images to read, {len(skipped)} inputs skipped; writing {len(todo)} of '
        f'{num_shards} shards')
    prepare.collect_markers(todo, parallel_map(functools.partial(_write_task, out=str(out), options=options), todo),
                            markers, log=log, unit='images')
    manifest = prepare._manifest(len(inputs), skipped, markers, options)
    if not manifest['counts']['clips_written']:
      prepare._unpin(out, shards)
      manifest['shards'] = []
    prepare._write_json(out / prepare.MANIFEST, manifest)
  return manifest


def _done(out: pathlib.Path, name: str, items: list[Input], options: ImageOptions) -> dict | None:
  """The done marker of a complete shard with this very plan, else None (the shard is to be written)."""
  path = out / prepare.DONE / f'{name}.json'
  if not (out / name).exists() or not path.exists():
    return None
  marker = json.loads(path.read_text())
  return marker if marker['plan'] == _digest(items, options) else None


def summary(manifest: dict, out: str | os.PathLike) -> str:
  """One line: images written, skipped inputs by reason, where the manifest is."""
  counts = manifest['counts']
  skipped = f' ({prepare.skip_reasons(manifest)})' if counts['skipped'] else ''
  return (f'wrote {counts["clips_written"]} images from {counts["inputs"]} inputs in {len(manifest["shards"])} '
          f'shards; skipped {counts["skipped"]}{skipped}; manifest: {pathlib.Path(out) / prepare.MANIFEST}')
