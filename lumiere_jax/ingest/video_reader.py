"""How `lumiere-data prepare` reads a video with PyAV.

`probe` checks a file from its header and packet times (decoding one frame), before any frame is decoded in bulk;
`read_frames` decodes a span after a seek and keeps, converted, only the frames it picks. Both raise `Skip` with the
reason an input or clip is left out: for a decoding failure FFmpeg's own logged message ("Picture size 20000x20000 is
invalid"), not the errno text PyAV derives from its return code ("Device or resource busy").
"""

from collections.abc import Callable
import contextlib
import math
import os
import stat

import av
import av.logging
import numpy as np

from lumiere_jax.ingest.inputs import Skip


def cause(error: BaseException) -> str:
  """What went wrong, in FFmpeg's words when it logged them (`ffmpeg_messages` on), else the error's own."""
  if isinstance(error, av.error.FFmpegError):
    logged = error.log[2].strip() if error.log else ''
    return logged or error.strerror or str(error)
  return str(error) or type(error).__name__


@contextlib.contextmanager
def ffmpeg_messages():
  """FFmpeg's error messages kept on the errors PyAV raises in the block (`error.log`), and not printed."""
  level = av.logging.get_level()
  av.logging.set_level(av.logging.ERROR)
  try:
    with av.logging.Capture():
      yield
  finally:
    av.logging.set_level(level)


@contextlib.contextmanager
def _undecodable_as_skip():
  """PyAV's failures in the block raised as `Skip('undecodable: <cause>')`."""
  try:
    with ffmpeg_messages():
      yield
  except (av.error.FFmpegError, ValueError, EOFError) as e:
    raise Skip(f'undecodable: {cause(e)}') from e


def check_file(path: str) -> None:
  """`Skip` unless `path` is a non-empty regular file (following symbolic links), naming what it is instead."""
  try:
    info = os.stat(path)
  except FileNotFoundError:
    raise Skip('broken symbolic link' if os.path.islink(path) else 'missing file') from None
  except OSError as e:  # e.g. a symbolic link loop: "Too many levels of symbolic links"
    raise Skip(f'unreadable: {e.strerror}') from None
  if not stat.S_ISREG(info.st_mode):
    raise Skip('not a file')
  if not info.st_size:
    raise Skip('zero-byte file')


def probe(path: str, *, max_pixels: int, min_size: int) -> tuple[float, float, int, int, int]:
  """(first frame time, duration, height, width, quarter turns) from the header, packet times and one frame."""
  check_file(path)
  with _undecodable_as_skip(), av.open(path) as container:
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
  with _undecodable_as_skip(), contextlib.closing(_decoded(path, targets[0])) as frames:
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
