"""Video bytes <-> uint8 frames with PyAV (H.264 in MP4), plus MP4/GIF files and tiled sample sheets.

Frames are uint8 `(T, H, W, 3)` RGB. Decoding leaves PyAV's threading at its default: `thread_type='AUTO'` made
tiny clips ~5x slower.
"""

import fractions
import io
import os
import pathlib

import av
import numpy as np
from PIL import Image

from lumiere_jax.data.records import BadRecordError

# H.264's default quality (crf 23) smears the saturated colours of small clips; crf 10 keeps them (mean abs error ~1).
DEFAULT_CRF = 10


def encode_mp4(frames: np.ndarray, fps: float, *, crf: int = DEFAULT_CRF) -> bytes:
  """uint8 (T, H, W, 3) frames -> the bytes of an MP4 file (libx264, yuv420p; H and W must be even)."""
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
    raise ValueError(f'expected uint8 frames (T>0, H, W, 3), got {frames.dtype} {frames.shape}')
  height, width = frames.shape[1:3]
  if height % 2 or width % 2:
    raise ValueError(f'yuv420p needs even frame sizes, got {height}x{width}')
  buffer = io.BytesIO()
  with av.open(buffer, 'w', format='mp4') as container:
    stream = container.add_stream('libx264', rate=fractions.Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    # One thread: x264's output depends on its thread count (same bytes on every machine), and tiny clips encode
    # faster without its thread pool.
    stream.options = {'crf': str(crf), 'threads': '1'}
    for frame in frames:
      container.mux(stream.encode(_yuv420p(frame)))
    container.mux(stream.encode())
  return buffer.getvalue()


def _yuv420p(frame: np.ndarray) -> av.VideoFrame:
  """rgb24 -> yuv420p with each row's padding filled by its last pixel.

  x264's SIMD code reads past the visible width into the padding, which the conversion leaves uninitialised: without
  this, the same frames encoded to different bytes from one call to the next.
  """
  out = av.VideoFrame.from_ndarray(frame, format='rgb24').reformat(format='yuv420p')
  for plane in out.planes:
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
    rows[:, plane.width:] = rows[:, plane.width - 1:plane.width]
  return out


def decode_video(data: bytes, max_frames: int | None = None) -> tuple[np.ndarray, float]:
  """Video file bytes -> (uint8 frames (T, H, W, 3), fps; 0.0 if the container does not say).

  Stops after `max_frames` frames when given (callers that need a prefix skip decoding the rest). Raises
  `BadRecordError` for empty or undecodable data, a file without a video stream, or one without frames.
  """
  frames, _, fps = _decode(data, lambda count, _: max_frames is not None and count >= max_frames)
  return frames, fps


def decode_timed(data: bytes, until: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Video file bytes -> (uint8 frames (T, H, W, 3), float64 times (T,) in seconds from the first frame).

  With `until`, decoding stops at the first frame shown after that time, so the frame nearest to any time up to
  `until` is among those returned. Frames without a timestamp are placed at the stream's average rate.
  """
  frames, times, _ = _decode(data, lambda _, time: until is not None and time > until)
  return frames, times


def _decode(data: bytes, stop) -> tuple[np.ndarray, np.ndarray, float]:
  """Frames, their times and the stream's fps; decoding ends after the frame for which `stop(count, time)`."""
  if not data:
    raise BadRecordError('empty video')
  try:
    container = av.open(io.BytesIO(data), 'r')
  except (av.error.FFmpegError, ValueError, EOFError) as e:
    raise BadRecordError('undecodable video', str(e)) from e
  with container:
    if not container.streams.video:
      raise BadRecordError('no video stream')
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    frames, times = [], []
    try:
      for frame in container.decode(stream):
        frames.append(frame.to_ndarray(format='rgb24'))
        times.append(frame.time if frame.time is not None else len(times) / (fps or 1.0))
        if stop(len(frames), times[-1] - times[0]):
          break
    except (av.error.FFmpegError, ValueError, EOFError) as e:
      raise BadRecordError('undecodable video', str(e)) from e
  if not frames:
    raise BadRecordError('empty video', 'no frames decoded')
  order = np.argsort(times, kind='stable')  # presentation order, should a container list frames out of it
  times = np.asarray(times, np.float64)[order]
  return np.stack(frames)[order], times - times[0], fps


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float) -> None:
  """Writes uint8 (T, H, W, 3) frames to an MP4 file."""
  pathlib.Path(path).write_bytes(encode_mp4(frames, fps))


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float) -> None:
  """Writes uint8 (T, H, W, 3) frames to a looping GIF (Pillow; GIF stores frame times in 10 ms steps)."""
  images = [Image.fromarray(frame) for frame in np.asarray(frames, np.uint8)]
  images[0].save(path, format='GIF', save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def tile(videos: np.ndarray, columns: int) -> np.ndarray:
  """(N, T, H, W, C) videos -> one (T, rows * H, columns * W, C) grid video; empty cells are black."""
  n, t, h, w, c = videos.shape
  rows = -(-n // columns)
  cells = np.zeros((rows * columns, t, h, w, c), videos.dtype)
  cells[:n] = videos
  return cells.reshape(rows, columns, t, h, w, c).transpose(2, 0, 3, 1, 4, 5).reshape(t, rows * h, columns * w, c)
