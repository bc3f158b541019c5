"""Video bytes <-> uint8 frames with PyAV (H.264 in MP4), plus video files and tiled sample sheets.

Frames are uint8 `(T, H, W, 3)` RGB. Output files (`write_video`, by suffix): `.mp4` H.264 (lossy, small), `.gif`
(palette, lossy), and the lossless ones, which decode to exactly the frames written: `.mkv` FFV1 and `.png`
frames. Decoding leaves PyAV's threading at its default: `thread_type='AUTO'` made
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

OUTPUT_KINDS = ('mp4', 'gif', 'mkv', 'png')
LOSSLESS_KINDS = ('mkv', 'png')  # decode to exactly the frames written
# H.264's default quality (crf 23) smears the saturated colours of small clips; crf 10 keeps them (mean abs error ~1).
DEFAULT_CRF = 10


def encode_mp4(frames: np.ndarray, fps: float, *, crf: int = DEFAULT_CRF) -> bytes:
  """uint8 (T, H, W, 3) frames -> the bytes of an MP4 file (libx264, yuv420p; H and W must be even)."""
  frames = _checked(frames)
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
  this, the same frames encoded to different bytes from one call to the next. One swscale thread, as for x264.
  """
  out = av.VideoFrame.from_ndarray(frame, format='rgb24').reformat(format='yuv420p', threads=1)
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


def encode_ffv1(frames: np.ndarray, fps: float) -> bytes:
  """uint8 (T, H, W, 3) frames -> the bytes of a Matroska file of lossless FFV1 (RGB as bgr0; any frame size)."""
  frames = _checked(frames)
  buffer = io.BytesIO()
  with av.open(buffer, 'w', format='matroska') as container:
    stream = container.add_stream('ffv1', rate=fractions.Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], 'bgr0'
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24').reformat(format='bgr0')))
    container.mux(stream.encode())
  return buffer.getvalue()


def _checked(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
    raise ValueError(f'expected uint8 frames (T>0, H, W, 3), got {frames.dtype} {frames.shape}')
  return frames


def png_paths(path: str | os.PathLike, num_frames: int) -> list[pathlib.Path]:
  """Where `write_video` puts the PNG frames of `path`: a `%d`-style pattern (`frames/%04d.png`) as given, `x.png` ->
  `x-0000.png`, ..., a path without suffix -> the folder's `0000.png`, ..."""
  path = pathlib.Path(path)
  if '%' in path.name:
    pattern = str(path)
  elif path.suffix:
    pattern = str(path.with_name(f'{path.stem}-%04d{path.suffix}'))
  else:
    pattern = str(path / '%04d.png')
  return [pathlib.Path(pattern % i) for i in range(num_frames)]


def output_kind(path: str | os.PathLike) -> str:
  """'mp4', 'gif', 'mkv' or 'png' (a `.png` name or pattern, or a folder); ValueError for any other suffix."""
  suffix = pathlib.Path(path).suffix.lower()
  kind = 'png' if not suffix else suffix[1:]
  if kind not in OUTPUT_KINDS:
    raise ValueError(f'{path}: unknown video output {suffix!r}; use .mp4 (H.264, lossy), .gif, or a lossless '
                     '.mkv (FFV1) or .png (a PNG per frame: x.png, frames/%04d.png or a folder)')
  if kind == 'png' and '%' in pathlib.Path(path).name:
    try:
      pathlib.Path(path).name % 0
    except (TypeError, ValueError) as e:
      raise ValueError(f'{path}: a PNG pattern takes one integer field such as %04d') from e
  return kind


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> list[pathlib.Path]:
  """Writes uint8 (T, H, W, 3) frames in the format `path`'s suffix names (`output_kind`); returns the files."""
  kind, frames = output_kind(path), _checked(frames)
  if kind == 'png':
    paths = png_paths(path, len(frames))
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for frame_path, frame in zip(paths, frames):
      Image.fromarray(frame).save(frame_path, format='PNG')
    return paths
  {'mp4': write_mp4, 'gif': write_gif, 'mkv': lambda p, f, r: pathlib.Path(p).write_bytes(encode_ffv1(f, r))}[kind](
      path, frames, fps)
  return [pathlib.Path(path)]


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
