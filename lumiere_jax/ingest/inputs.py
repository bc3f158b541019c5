"""What `lumiere-data prepare` reads: a folder of videos plus a captions file, or a manifest (the videos themselves are
read by `video_reader.py`).

Both files are tables with the columns `path`, `caption` and optionally `start`, `end` (seconds; a row then stands
for that span of the video): CSV with that header (`.csv`) or JSON Lines with those keys (`.jsonl`). Relative paths
are relative to the videos folder (captions file) or to the manifest's folder. With a folder, every video file in it
(recursively; hidden files such as macOS `._name.mp4` are left out) without a caption row is reported, not dropped.
Files are read as bytes and decoded strictly, so a caption that is not UTF-8 is reported with its row rather than
mangled. Rows that cannot be used become inputs with a `problem`, listed as skipped like unreadable videos; such a
row does not claim its video, so a later valid row for the same file or span is kept.
"""

import csv
import dataclasses
import io
import json
import math
import os
import pathlib

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
    elif not item.problem:  # only a usable row claims its video or span
      first_row[item.name] = where
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
