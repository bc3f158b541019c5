"""What `lumiere-data prepare` reads: a folder of videos plus a captions file, or a manifest; then the videos.

Both files are tables with the columns `path`, `caption` and optionally `start`, `end` (seconds; a row then stands
for that span of the video): CSV with that header (`.csv`) or JSON Lines with those keys (`.jsonl`). Relative paths
are relative to the videos folder (captions file) or to the manifest's folder. With a folder, every video file in it
(recursively; hidden files such as macOS `._name.mp4` are left out) without a caption row is reported, not dropped.
Files are read as bytes and decoded strictly, so a caption that is not UTF-8 is reported with its row rather than
mangled. Rows that cannot be used become inputs with a `problem`, listed as skipped like unreadable videos.

Videos are read with PyAV: `probe` checks a file from its header and packet times (decoding one frame), before any
frame is decoded in bulk; `read_frames` decodes a span after a seek and keeps, converted, only the frames it picks.
"""

from collections.abc import Callable
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import pathlib

import av
import numpy as np

VIDEO_EXTENSIONS = frozenset(('.mp4', '.m4v', '.mov', '.mkv', '.webm', '.avi', '.mpg', '.mpeg', '.ts', '.mts',
                              '.flv', '.wmv', '.3gp', '.ogv', '.gif'))
TABLE_FORMATS = ('.csv', '.jsonl')


class PrepareError(ValueError):
  """The inputs or options cannot be used at all (as opposed to one bad input, which is skipped)."""


class Skip(Exception):
  """An input or clip cannot be used; the message is the reason listed in the manifest."""


@dataclasses.dataclass(frozen=True)
class Input:
  """One video, or one span of a video, to prepare.

  `path` is the file, `display` the path as reported (relative to the base folder when inside it), `name` the unique
  prefix of its clips' keys (`display`, plus `@start-end` for a span); `problem`, when set, is why it is skipped.
  """

  path: str
  display: str
  name: str
  caption: str = ''
  start: float | None = None
  end: float | None = None
  problem: str = ''

  def report(self, reason: str) -> dict:
    """The manifest entry for skipping this input."""
    span = {key: value for key, value in (('start', self.start), ('end', self.end)) if value is not None}
    return dict(path=self.display, reason=reason, **span)


def collect_inputs(*, videos: str = '', captions: str = '', manifest: str = '') -> list[Input]:
  """The inputs named by a manifest, or by a captions file plus the video files found under `videos`."""
  table, base = (manifest, os.path.dirname(manifest)) if manifest else (captions, videos)
  inputs, first_row = [], {}
  for where, fields, problem in _rows(table):
    item = Input('', where, where, problem=problem) if problem else _input(fields, where, base)
    if not item.problem and item.name in first_row:
      item = dataclasses.replace(item, problem=f'duplicate of {first_row[item.name]}')
    first_row.setdefault(item.name, where)
    inputs.append(item)
  if videos:
    listed = {item.path for item in inputs}
    for path in _video_files(videos):
      if path not in listed:
        display = _display(path, videos)
        inputs.append(Input(path, display, display, problem=f'no caption row in {os.path.basename(captions)}'))
  return inputs


def _rows(table: str):
  """(where, fields, problem) for each row of a CSV or JSON Lines table; `where` is `file line N`."""
  suffix = pathlib.Path(table).suffix.lower()
  if suffix not in TABLE_FORMATS:
    raise PrepareError(f'{table}: a captions file or manifest must be {" or ".join(TABLE_FORMATS)}')
  # surrogateescape keeps undecodable bytes (as lone surrogates) so they are reported per row, not for the file.
  text = pathlib.Path(table).read_bytes().decode('utf-8', 'surrogateescape').removeprefix('\ufeff')
  name = os.path.basename(table)
  if suffix == '.csv':
    reader = csv.DictReader(io.StringIO(text, newline=''))
    if not {'path', 'caption'} <= set(reader.fieldnames or ()):
      raise PrepareError(f'{table}: the CSV header must name path and caption (optionally start, end), got '
                         f'{reader.fieldnames}')
    for fields in reader:
      yield f'{name} line {reader.line_num}', fields, ''
    return
  for number, line in enumerate(text.split('\n'), 1):
    if not line.strip():
      continue
    try:
      fields = json.loads(line)
      problem = '' if isinstance(fields, dict) else 'not a JSON object'
    except json.JSONDecodeError as e:
      fields, problem = {}, f'not JSON: {e}'
    yield f'{name} line {number}', fields, problem


def _input(fields: dict, where: str, base: str) -> Input:
  """The row as an input; the first thing wrong with it becomes its problem."""
  path = fields.get('path')
  if not isinstance(path, str) or not path.strip():
    return Input('', where, where, problem='no path')
  path = os.path.normpath(os.path.join(base, os.path.expanduser(path.strip())))
  display = _display(path, base)
  try:
    start, end = _seconds(fields.get('start')), _seconds(fields.get('end'))
  except ValueError as e:
    return Input(path, display, display, problem=f'{e} ({where})')
  span = '' if start is None and end is None else f'@{_text(start)}-{_text(end)}'
  item = Input(path, display, display + span, start=start, end=end)
  caption = fields.get('caption')
  if not isinstance(caption, str):
    return dataclasses.replace(item, problem=f'no caption ({where})')
  try:
    caption.encode('utf-8')
  except UnicodeEncodeError:
    return dataclasses.replace(item, problem=f'caption is not UTF-8 ({where})')
  if not caption.strip():
    return dataclasses.replace(item, problem=f'empty caption ({where})')
  if start is not None and end is not None and end <= start:
    return dataclasses.replace(item, problem=f'end {end:g} s is not after start {start:g} s ({where})')
  return dataclasses.replace(item, caption=caption.strip())


def _seconds(value) -> float | None:
  """A start/end cell: None when absent or empty, else a finite number of seconds >= 0."""
  if value is None or value == '':
    return None
  try:
    seconds = float(value)
  except (TypeError, ValueError):
    seconds = math.nan
  if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
    raise ValueError(f'start/end {value!r} is not a number of seconds >= 0')
  return seconds


def _text(seconds: float | None) -> str:
  return '' if seconds is None else f'{seconds:g}'


def _display(path: str, base: str) -> str:
  """`path` relative to `base` when inside it (posix separators), else as is; undecodable bytes as \\x escapes."""
  relative = os.path.relpath(path, base)
  outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
  shown = path if outside else pathlib.Path(relative).as_posix()
  return shown.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')


def _video_files(directory: str) -> list[str]:
  """Video files under `directory`, recursively, in sorted order; hidden files and folders are left out."""
  found = []
  for root, folders, files in os.walk(directory):
    folders[:] = sorted(folder for folder in folders if not folder.startswith('.'))
    found += [os.path.normpath(os.path.join(root, name)) for name in sorted(files)
              if not name.startswith('.') and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS]
  return found


def probe(path: str, *, max_pixels: int, min_size: int) -> tuple[float, float, int, int, int]:
  """(first frame time, duration, height, width, quarter turns) from the header, packet times and one frame."""
  if not os.path.isfile(path):
    raise Skip('missing file' if not os.path.exists(path) else 'not a file')
  if not os.path.getsize(path):
    raise Skip('zero-byte file')
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise Skip('no video stream')
      stream = container.streams.video[0]
      height, width = stream.codec_context.height, stream.codec_context.width
      if not height or not width:
        raise Skip('no frame size in the stream header')
      if height * width > max_pixels:
        raise Skip(f'resolution {width}x{height} above --max_pixels {max_pixels}')
      if min(height, width) < min_size:
        raise Skip(f'resolution {width}x{height} below --min_size {min_size}')
      rate = float(stream.average_rate or stream.guessed_rate or 0)
      first, end, frame = math.inf, -math.inf, None
      for packet in container.demux(stream):
        if packet.pts is None:
          continue
        time = float(packet.pts * stream.time_base)
        length = float(packet.duration * stream.time_base) if packet.duration else 1 / rate if rate else 0.0
        first, end = min(first, time), max(end, time + length)
        if frame is None:
          frame = next(iter(packet.decode()), None)
      if frame is None:
        frame = next(iter(stream.codec_context.decode(None)), None)
  except av.error.FFmpegError as e:
    raise Skip(f'undecodable: {e.strerror or e}') from e  # strerror: without the errno and path
  except (ValueError, EOFError) as e:
    raise Skip(f'undecodable: {e}') from e
  if not math.isfinite(first):
    raise Skip('no timestamped frames')
  if frame is None:
    raise Skip('undecodable: no frame decodes')
  return first, end - first, height, width, round((frame.rotation or 0) / 90) % 4


def read_frames(path: str, targets: np.ndarray, height: int, width: int, quarter_turns: int) -> np.ndarray:
  """uint8 (len(targets), height, width, 3): for each target time (seconds, the stream's clock, increasing) the frame
  nearest to it (ties: the later), resized and turned counterclockwise `quarter_turns` times."""
  if quarter_turns % 2:
    height, width = width, height

  def convert(frame):
    return np.rot90(frame.to_ndarray(format='rgb24', width=width, height=height, interpolation='AREA'),
                    quarter_turns)

  chosen, previous, previous_time, interval = [], None, None, 0.0
  with contextlib.closing(_decoded(path, targets[0])) as frames:
    for frame in frames:
      if frame.time is None:
        raise Skip('undecodable: a frame without a timestamp')
      # The previous frame is the nearest to every target before the midpoint between it and this one.
      while previous is not None and len(chosen) < len(targets) and (
          2 * targets[len(chosen)] < previous_time + frame.time - 1e-9):
        chosen.append(previous.array())
      if len(chosen) == len(targets):
        break
      if previous is not None:
        interval = frame.time - previous_time
      previous, previous_time = _Lazy(frame, convert), frame.time
  if len(chosen) < len(targets):  # the stream ended: its last frame lasts about one frame interval
    if previous is None or targets[-1] >= previous_time + interval:
      raise Skip(f'the video ends before the clip (last frame at {previous_time or 0:.2f} s, clip ends at '
                 f'{targets[-1]:.2f} s)')
    chosen += [previous.array()] * (len(targets) - len(chosen))
  return np.stack(chosen)


class _Lazy:
  """A decoded frame, converted to RGB only if chosen (once), then released: only the small frames stay in memory."""

  def __init__(self, frame, convert: Callable):
    self._frame, self._convert, self._array = frame, convert, None

  def array(self) -> np.ndarray:
    if self._array is None:
      self._array = np.ascontiguousarray(self._convert(self._frame))
      self._frame = None
    return self._array


def _decoded(path: str, time: float):
  """The video's frames in presentation order from the keyframe at or before `time` (from the start if the seek
  lands past `time`, as it can in formats without an index)."""
  for seek in (True, False):
    with av.open(path) as container:
      stream = container.streams.video[0]
      if seek:
        try:
          container.seek(int(time / stream.time_base), stream=stream)
        except av.error.FFmpegError:
          continue
      frames = container.decode(stream)
      first = next(frames, None)
      if first is None or (seek and first.time is not None and first.time > time + 1e-6):
        continue
      yield first
      yield from frames
      return
