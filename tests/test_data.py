"""Record schema, video I/O, temporal sampling and resizing, and the synthetic moving-shapes set."""

import fractions
import io
import pathlib

import av
import grain
import msgpack
import numpy as np
import pytest
from PIL import Image

from lumiere_jax.data import records, synthetic, transforms, video

GOOD = dict(key='clip-1', caption='a red circle moving left — ünïcode', video=b'\x00mp4', fps=29.97, num_frames=12,
            height=32, width=48)


def _clip(seed=0, size=32, frames=8):
  return synthetic.make_clip(np.random.default_rng(seed), size, frames)


def test_record_round_trip():
  assert records.decode_record(records.encode_record(**GOOD)) == GOOD


@pytest.mark.parametrize('data, reason', [
    (b'', 'empty record'),
    (b'\xc1', 'not msgpack'),
    (b'\x92\x01', 'not msgpack'),  # truncated array
    (msgpack.packb([1, 2]), 'not msgpack'),  # not a map
    (msgpack.packb({k: v for k, v in GOOD.items() if k != 'caption'}), 'missing field'),
    (msgpack.packb({**GOOD, 'fps': '30'}), 'bad field'),
    (msgpack.packb({**GOOD, 'num_frames': True}), 'bad field'),
    (msgpack.packb({**GOOD, 'height': 0}), 'bad field'),
    (msgpack.packb({**GOOD, 'caption': b'\xff\xfe'}, use_bin_type=False), 'bad field'),  # not UTF-8
    (msgpack.packb({**GOOD, 'caption': '  '}), 'empty caption'),
])
def test_malformed_records_raise_with_reason(data, reason):
  with pytest.raises(records.BadRecordError) as info:
    records.decode_record(data)
  assert info.value.reason == reason


def test_write_shards_round_robin_and_atomic(tmp_path):
  data = [f'record-{i}'.encode() for i in range(7)]
  paths = records.write_shards(iter(data), tmp_path, prefix='clips', num_shards=3)
  assert [pathlib.Path(p).name for p in paths] == [f'clips-0000{i}-of-00003.array_record' for i in range(3)]
  assert sorted(p.name for p in tmp_path.iterdir()) == [pathlib.Path(p).name for p in paths]  # no temp files left
  for shard, path in enumerate(paths):
    assert list(grain.sources.ArrayRecordDataSource([path])) == data[shard::3]


@pytest.mark.parametrize('fps', [16.0, 29.97])
def test_mp4_round_trip(fps):
  frames, _, _ = _clip(size=32, frames=6)
  decoded, decoded_fps = video.decode_video(video.encode_mp4(frames, fps))
  assert decoded.shape == frames.shape and decoded.dtype == np.uint8
  assert decoded_fps == pytest.approx(fps)
  assert np.abs(decoded.astype(int) - frames).mean() < 3
  assert len(video.decode_video(video.encode_mp4(frames, fps), max_frames=5)[0]) == 5


def _audio_only_mp4() -> bytes:
  buffer = io.BytesIO()
  with av.open(buffer, 'w', format='mp4') as container:
    stream = container.add_stream('aac', rate=16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp', layout='mono')
    frame.sample_rate = 16000
    container.mux(stream.encode(frame))
    container.mux(stream.encode())
  return buffer.getvalue()


@pytest.mark.parametrize('kind, reason', [
    ('zero', 'empty video'), ('garbage', 'undecodable video'), ('truncated', 'undecodable video'),
    ('audio', 'no video stream'),
])
def test_bad_video_bytes_raise_with_reason(kind, reason):
  mp4 = video.encode_mp4(_clip()[0], 16)
  data = dict(zero=b'', garbage=b'not a video at all' * 20, truncated=mp4[:len(mp4) // 2], audio=None)[kind]
  with pytest.raises(records.BadRecordError) as info:
    video.decode_video(_audio_only_mp4() if data is None else data)
  assert info.value.reason == reason


def test_encoding_is_deterministic_between_decodes():
  """The same frames give the same bytes even after other frames were decoded (x264 reads the rows' padding)."""
  blocks = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), np.uint8)
  frames = blocks.repeat(2, axis=1).repeat(2, axis=2)  # 32x32: without the fix, ~27 different encodings in 40
  other = video.encode_mp4(frames[::-1].copy(), 16)
  encodings = set()
  for _ in range(40):
    video.decode_video(other)
    encodings.add(video.encode_mp4(frames, 16))
  assert len(encodings) == 1


def test_encode_rejects_odd_sizes():
  with pytest.raises(ValueError, match='even'):
    video.encode_mp4(np.zeros((2, 31, 32, 3), np.uint8), 16)


def test_write_mp4_and_gif(tmp_path):
  frames = _clip(size=16, frames=4)[0]
  video.write_mp4(tmp_path / 'a.mp4', frames, 16)
  assert video.decode_video((tmp_path / 'a.mp4').read_bytes())[0].shape == frames.shape
  video.write_gif(tmp_path / 'a.gif', frames, 16)
  with Image.open(tmp_path / 'a.gif') as gif:
    assert (gif.n_frames, gif.size, gif.info['duration']) == (len(frames), (16, 16), 60)  # 62.5 ms in GIF's 10 ms


def test_tile_places_videos_row_major():
  videos = np.arange(3, dtype=np.uint8)[:, None, None, None, None] + np.ones((3, 2, 4, 6, 3), np.uint8)
  grid = video.tile(videos, columns=2)
  assert grid.shape == (2, 8, 12, 3)
  assert (grid[:, :4, :6] == 1).all() and (grid[:, :4, 6:] == 2).all() and (grid[:, 4:, :6] == 3).all()
  assert (grid[:, 4:, 6:] == 0).all()


def _cfr_indices(source_fps, count=16, start=0):
  return [transforms.nearest_frames(np.arange(100) / source_fps,
                                    start / source_fps + np.arange(count) / 16)[i] for i in range(count)]


@pytest.mark.parametrize('source_fps, expected', [
    (16, list(range(16))),
    (30, [0, 2, 4, 6, 8, 9, 11, 13, 15, 17, 19, 21, 23, 24, 26, 28]),  # i * 1.875, halves rounded up
    (29.97, [0, 2, 4, 6, 7, 9, 11, 13, 15, 17, 19, 21, 22, 24, 26, 28]),  # i * 1.873125
    (25, [int(np.floor(i * 25 / 16 + 0.5)) for i in range(16)]),
    (60, [int(np.floor(i * 60 / 16 + 0.5)) for i in range(16)]),
])
def test_temporal_sampling_at_target_fps(source_fps, expected):
  targets = transforms.target_times(100, source_fps, 16, 16)
  np.testing.assert_array_equal(transforms.nearest_frames(np.arange(100) / source_fps, targets), expected)
  needed = expected[-1] + 1
  starts = set()
  for seed in range(50):
    targets = transforms.target_times(needed + 3, source_fps, 16, 16, np.random.default_rng(seed))
    indices = transforms.nearest_frames(np.arange(needed + 3) / source_fps, targets)
    starts.add(int(indices[0]))
    np.testing.assert_array_equal(indices, np.asarray(expected) + indices[0])
  assert starts == {0, 1, 2, 3}
  with pytest.raises(records.BadRecordError, match='too short'):
    transforms.nearest_frames(np.arange(needed - 1) / source_fps, transforms.target_times(needed - 1, source_fps,
                                                                                          16, 16))


def test_variable_frame_rate_takes_the_frame_nearest_in_time():
  times = np.cumsum(np.random.default_rng(0).uniform(0.01, 0.06, 60))
  times -= times[0]
  targets = transforms.target_times(60, 60 / times[-1], 16, 12)
  reference = [int(np.flatnonzero(np.abs(times - t) == np.abs(times - t).min())[-1]) for t in targets]
  np.testing.assert_array_equal(transforms.nearest_frames(times, targets), reference)


@pytest.mark.parametrize('policy, expected', [('loop', [0, 1, 2, 3, 4, 0, 1, 2]), ('pad', [0, 1, 2, 3, 4, 4, 4, 4])])
def test_short_clip_policies(policy, expected):
  times, targets = np.arange(5) / 16, transforms.target_times(5, 16, 16, 8)
  np.testing.assert_array_equal(transforms.nearest_frames(times, targets, policy), expected)
  with pytest.raises(records.BadRecordError, match='too short'):
    transforms.nearest_frames(times, targets, 'skip')


@pytest.mark.parametrize('shape', [(2, 40, 80, 3), (2, 80, 40, 3)])  # landscape and portrait
def test_crop_square_centre_and_random(shape):
  frames = np.zeros(shape, np.uint8)
  side = min(shape[1:3])
  frames[:, (shape[1] - side) // 2:(shape[1] + side) // 2, (shape[2] - side) // 2:(shape[2] + side) // 2] = 255
  out = transforms.resize_square(transforms.crop_square(frames), 16)
  assert out.shape == (2, 16, 16, 3) and (out == 255).all()  # the centre square, nothing of the sides
  rows, cols = np.indices(shape[1:3])
  frames = np.stack([rows, cols, np.zeros_like(rows)], -1)[None].astype(np.uint8)  # each pixel holds (row, col)
  corners = {tuple(transforms.crop_square(frames, np.random.default_rng(seed))[0, 0, 0, :2]) for seed in range(40)}
  long_axis = int(np.argmax(shape[1:3]))
  assert all(corner[1 - long_axis] == 0 for corner in corners)  # moves along the long side only
  assert {corner[long_axis] for corner in corners} <= set(range(abs(shape[1] - shape[2]) + 1))  # inside the frame
  assert len(corners) > 10


def test_resize_square_is_a_no_op_at_size():
  frames = np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
  np.testing.assert_array_equal(transforms.resize_square(frames, 16), frames)


def _vfr_mp4(times_ms, size=16) -> bytes:
  """An MP4 whose frames show at the given millisecond timestamps (variable frame rate)."""
  buffer = io.BytesIO()
  with av.open(buffer, 'w', format='mp4') as container:
    stream = container.add_stream('libx264', rate=1000)
    stream.width = stream.height = size
    stream.pix_fmt, stream.codec_context.time_base = 'yuv420p', fractions.Fraction(1, 1000)
    for i, time_ms in enumerate(times_ms):
      frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 10 * i, np.uint8), format='rgb24')
      frame.pts, frame.time_base = time_ms, fractions.Fraction(1, 1000)
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  return buffer.getvalue()


def test_decode_timed_reads_variable_frame_times():
  times_ms = [0, 40, 50, 120, 200, 210, 300, 330]
  data = _vfr_mp4(times_ms)
  frames, times = video.decode_timed(data)
  assert len(frames) == len(times_ms)
  np.testing.assert_allclose(times, np.asarray(times_ms) / 1000, atol=1e-6)
  frames, times = video.decode_timed(data, until=0.1)
  assert len(frames) == 4 and times[-1] > 0.1  # stops at the first frame shown after `until`


def test_normalize_range():
  out = transforms.normalize(np.array([0, 255, 128], np.uint8))
  assert out.dtype == np.float32 and out[0] == -1.0 and out[1] == 1.0 and abs(out[2]) < 0.01


def test_make_clip_caption_and_motion():
  for seed in range(20):
    frames, caption, attributes = _clip(seed, size=32, frames=8)
    assert frames.shape == (10, 32, 32, 3) and frames.dtype == np.uint8
    assert caption == synthetic.caption(attributes['colour'], attributes['shape'], attributes['direction'])
    area = (frames.max(-1).astype(np.float32) - synthetic.BACKGROUND).sum((1, 2))
    assert area.min() > 0.95 * area.max()  # the whole shape stays inside the frame
    mask = frames.max(-1) > synthetic.FOREGROUND_THRESHOLD
    (y0, x0), (y1, x1) = (np.argwhere(mask[t]).mean(0) for t in (0, 7))  # 8 consecutive frames
    assert max(abs(x1 - x0), abs(y1 - y0)) >= 32 / 3 - 1
    assert synthetic.describe_clip(frames) == {k: attributes[k] for k in ('colour', 'direction')}


def test_describe_clip_survives_h264():
  hits = 0
  for seed in range(60):
    frames, _, attributes = _clip(seed, size=32, frames=8)
    decoded, _ = video.decode_video(video.encode_mp4(frames, 16))
    judged = synthetic.describe_clip(decoded[seed % 3:seed % 3 + 8])  # an 8-frame training window
    hits += judged == {k: attributes[k] for k in ('colour', 'direction')}
  assert hits >= 0.95 * 60


def test_describe_clip_without_foreground_or_motion():
  dark = np.full((4, 16, 16, 3), synthetic.BACKGROUND, np.uint8)
  assert synthetic.describe_clip(dark) == dict(colour=None, direction=None)
  still = dark.copy()
  still[:, 4:10, 4:10] = synthetic.COLOURS['green']
  assert synthetic.describe_clip(still) == dict(colour='green', direction=None)


def _keys_and_captions(paths):
  return sorted((r['key'], r['caption'], r['video']) for r in map(records.decode_record,
                                                                  grain.sources.ArrayRecordDataSource(paths)))


def test_ensure_synthetic_dataset_is_idempotent_and_deterministic(tmp_path):
  kwargs = dict(num_clips=6, image_size=16, num_frames=4, fps=8, num_shards=2)
  paths = synthetic.ensure_synthetic_dataset(tmp_path / 'a', **kwargs)
  contents = _keys_and_captions(paths)
  assert len(contents) == 6 and all(len(video.decode_video(c[2])[0]) == 4 + 1 for c in contents)
  stamps = [pathlib.Path(p).stat().st_mtime_ns for p in paths]
  assert synthetic.ensure_synthetic_dataset(tmp_path / 'a', **kwargs) == paths
  assert [pathlib.Path(p).stat().st_mtime_ns for p in paths] == stamps  # reused, not rewritten
  assert _keys_and_captions(synthetic.ensure_synthetic_dataset(tmp_path / 'b', **kwargs)) == contents
  marker = pathlib.Path(paths[0]).parent / 'COMPLETE.json'
  marker.unlink()  # as if a build had been interrupted: rebuilt
  assert synthetic.ensure_synthetic_dataset(tmp_path / 'a', **kwargs) == paths
  assert marker.exists() and pathlib.Path(paths[0]).stat().st_mtime_ns != stamps[0]
  assert _keys_and_captions(paths) == contents
  assert _keys_and_captions(synthetic.ensure_synthetic_dataset(tmp_path / 'a', **kwargs, seed=1)) != contents
