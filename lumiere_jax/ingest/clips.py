"""`lumiere-data prepare`'s unit of work: an input cut into clips (`plan_input`), and one clip read, resized and
encoded into a training record (`encoded_record`).

Neither lets an input's failure escape as anything but a reason: whatever goes wrong with one video (a header FFmpeg
refuses, a frame that does not decode, a size the encoder refuses, memory) skips that input or clip, listed with the
reason, and the run goes on.
"""

import dataclasses
import hashlib
import json

import numpy as np

from lumiere_jax.data import records, video
from lumiere_jax.ingest import video_reader
from lumiere_jax.ingest.inputs import Input, Skip
from lumiere_jax.ingest.options import Options

MAX_SIDE = 16384  # pixels: libx264 refuses wider or taller frames


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
    found = video_reader.probe(item.path, max_pixels=options.max_pixels, min_size=options.min_size)
    return _cut(item, *found, options), ''
  except Skip as e:
    return [], str(e)
  except Exception as e:  # any failure of one input (PyAV, memory) skips it, never the run
    return [], f'unreadable: {_described(e)}'


def _cut(item: Input, first: float, duration: float, height: int, width: int, turns: int,
         options: Options) -> list[Clip]:
  """Consecutive clips over the input's span; a tail shorter than a clip only with --keep_tail, if long enough."""
  start = item.start or 0.0
  span = (duration if item.end is None else min(item.end, duration)) - start
  if span <= 0:
    raise Skip(f'start {start:g} s is past the end ({duration:.2f} s)')
  full = int(span / options.clip_seconds + 1e-9)
  lengths = [round(options.clip_seconds * options.fps)] * full
  tail = int((span - full * options.clip_seconds) * options.fps + 1e-6)
  if options.keep_tail and tail >= max(options.min_frames, options.min_seconds * options.fps - 1e-6, 1):
    lengths.append(tail)
  if not lengths:
    raise Skip(f'too short ({span:.2f} s; --min_seconds {options.min_seconds:g}, --min_frames {options.min_frames})'
               if options.keep_tail else f'shorter than one clip ({span:.2f} s < {options.clip_seconds:g} s)')
  scale = options.size / min(height, width) if options.size else 1.0
  even = [max(2, 2 * round(side * scale / 2)) for side in (height, width)]
  if max(even) > MAX_SIDE:
    raise Skip(f'output frames too large ({even[1]}x{even[0]} from {width}x{height} at --size {options.size}; the '
               f'H.264 encoder takes at most {MAX_SIDE} pixels a side)')
  height, width = even[::-1] if turns % 2 else even
  return [Clip(f'{item.name}#{i}', item.path, item.display, item.caption, first + start + i * options.clip_seconds,
               n, height, width, turns) for i, n in enumerate(lengths)]


def plan_digest(clips: list[Clip], options: Options) -> str:
  """A digest of what a shard of these clips holds: its done marker is valid for this very plan only."""
  return hashlib.sha256(json.dumps([options.fps, *map(dataclasses.astuple, clips)]).encode()).hexdigest()


def encoded_record(clip: Clip, options: Options) -> bytes:
  """The clip as a training record (`records.py`); `Skip` with the reason when it cannot be read or encoded."""
  try:
    frames = video_reader.read_frames(clip.path, clip.time + np.arange(clip.num_frames) / options.fps, clip.height,
                                      clip.width, clip.quarter_turns)
  except Skip:
    raise
  except Exception as e:  # a resize or memory failure skips this clip only
    raise Skip(f'unreadable frames: {_described(e)}') from e
  try:
    with video_reader.ffmpeg_messages():
      encoded = video.encode_mp4(frames, options.fps)
    return records.encode_record(key=clip.key, caption=clip.caption, video=encoded, fps=options.fps,
                                 num_frames=len(frames), height=clip.height, width=clip.width)
  except Exception as e:  # the encoder refusing this clip skips it only
    raise Skip(f'not encodable: {_described(e)}') from e


def _described(error: Exception) -> str:
  return f'{type(error).__name__}: {video_reader.cause(error)}'
