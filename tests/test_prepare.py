"""`lumiere-data prepare`: a folder of small generated videos (several containers, codecs, rates, sizes, a rotated
one and every kind of bad input) -> shards that training reads; determinism, resume and the command line."""

import fractions
import json
import os
import pathlib
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
from absl import flags

from lumiere_jax import config as config_lib
from lumiere_jax.data import pipeline, records, transforms, video
from lumiere_jax.ingest import clips as clips_lib, options as options_lib, prepare

flags.FLAGS.mark_as_parsed()  # grain reads absl flags; outside app.run they must be marked parsed
ROOT = pathlib.Path(__file__).resolve().parent.parent
FAST = dict(clip_seconds=1.0, size=32, min_size=24, max_pixels=3500, num_shards=3)

# name: (seconds, fps, height, width, codec, clips at 1 s, or the reason it is skipped)
VIDEOS = {
    'a/wide.mp4': (3.2, 25, 48, 64, 'libx264', 3),
    'a/b/tall.mkv': (1.5, 30, 64, 48, 'mpeg4', 1),
    'ntsc.mp4': (2.0, 30000 / 1001, 32, 32, 'libx264', 2),
    'fast.avi': (1.2, 60, 48, 64, 'mpeg4', 1),
    'web.webm': (1.1, 30, 32, 48, 'libvpx-vp9', 1),
    'short.mp4': (0.6, 25, 32, 32, 'libx264', 'shorter than one clip (0.60 s < 1 s)'),
    'huge.mp4': (1.0, 25, 64, 64, 'libx264', 'resolution 64x64 above --max_pixels 3500'),
    'tiny.mp4': (1.0, 25, 16, 16, 'libx264', 'resolution 16x16 below --min_size 24'),
    'uncaptioned.mp4': (1.0, 25, 32, 32, 'libx264', 'no caption row in captions.csv'),
}
ROTATED = 'rotated.mp4'  # stored 64 wide x 48 high, displayed rotated by 90 degrees: portrait
BAD = {
    'empty.mp4': 'zero-byte file',
    'truncated.mp4': 'undecodable: ',
    'audio.m4a': 'no video stream',
    'garbage.mp4': 'undecodable: ',
    'missing.mp4': 'missing file',
    'latin1.mp4': 'caption is not UTF-8 (captions.csv line ',
    'blank.mp4': 'empty caption (captions.csv line ',
}


def _levels(num_frames):
  """A distinct grey level per source frame, so stored frames can be traced back to their source frame."""
  return 20 + (np.arange(num_frames) * 23) % 200


def _write_video(path, seconds, fps, height, width, codec, rotation=0):
  num_frames = round(seconds * fps)
  path.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(path), 'w') as container:
    stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    stream.options = {'libx264': {'crf': '1'}, 'mpeg4': {'qscale': '1'}}.get(codec, {'crf': '4', 'b': '0'})
    if rotation:
      stream.set_display_rotation(rotation)
    for level in _levels(num_frames):
      frame = np.full((height, width, 3), level, np.uint8)
      frame[:4, :4] = (255, 0, 0)  # a red mark in the stored frame's top-left corner
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())


def _write_audio(path):
  with av.open(str(path), 'w') as container:
    stream = container.add_stream('aac', rate=16000)
    for i in range(10):
      frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp', layout='mono')
      frame.sample_rate, frame.pts = 16000, i * 1024
      container.mux(stream.encode(frame))
    container.mux(stream.encode())


@pytest.fixture(scope='module')
def collection(tmp_path_factory):
  """videos/ (good and bad files) and its captions.csv."""
  root = tmp_path_factory.mktemp('collection')
  videos = root / 'videos'
  for name, (seconds, fps, height, width, codec, _) in VIDEOS.items():
    _write_video(videos / name, seconds, fps, height, width, codec)
  _write_video(videos / ROTATED, 1.0, 25, 48, 64, 'libx264', rotation=90)
  (videos / 'empty.mp4').write_bytes(b'')
  data = (videos / 'a/wide.mp4').read_bytes()
  (videos / 'truncated.mp4').write_bytes(data[:len(data) // 2])
  _write_audio(videos / 'audio.m4a')
  (videos / 'garbage.mp4').write_bytes(np.random.default_rng(0).bytes(5000))
  (videos / '._wide.mp4').write_bytes(b'macOS metadata, not a video')
  rows = [f'{name},"caption of {name}"'.encode() for name in [*VIDEOS, ROTATED, *BAD] if name != 'uncaptioned.mp4']
  rows = [row.replace(b'caption of latin1.mp4', 'caf\u00e9 latin-1'.encode('latin-1')) for row in rows]
  rows = [row.replace(b'"caption of blank.mp4"', b'"  "') for row in rows]
  (root / 'captions.csv').write_bytes(b'\n'.join([b'path,caption', *rows]) + b'\n')
  return root


def _run(collection, out, workers=1, **options):
  options = dict(FAST, videos=str(collection / 'videos'), captions=str(collection / 'captions.csv')) | options
  return prepare.prepare(options_lib.Options(**options), out, workers=workers, log=lambda line: None)


def _shards(out):
  return {path.name: path.read_bytes() for path in sorted(out.glob('*.array_record'))}


def _records(out):
  found = []
  for path in sorted(out.glob('*.array_record')):
    reader = records.array_record_module.ArrayRecordReader(str(path))
    found += [records.decode_record(data) for data in reader.read_all()]
    reader.close()
  return found


@pytest.fixture(scope='module')
def prepared(collection, tmp_path_factory):
  out = tmp_path_factory.mktemp('prepared')
  return out, _run(collection, out)


def test_folder_and_captions(prepared):
  out, manifest = prepared
  expected = {f'{name}#{i}' for name, spec in VIDEOS.items() if isinstance(spec[-1], int) for i in range(spec[-1])}
  expected.add(f'{ROTATED}#0')
  found = _records(out)
  assert sorted(record['key'] for record in found) == sorted(expected)
  assert manifest['counts'] == dict(inputs=len(VIDEOS) + 1 + len(BAD), clips_written=len(expected),
                                    skipped=len(VIDEOS) - 5 + len(BAD))
  assert manifest['seconds'] == pytest.approx(len(expected))
  assert [shard['name'] for shard in manifest['shards']] == [f'clips-{i:05d}-of-00003.array_record' for i in range(3)]
  assert json.loads((out / 'manifest.json').read_text()) == manifest
  for record in found:
    frames, fps = video.decode_video(record['video'])
    name = record['key'].split('#')[0]
    assert fps == record['fps'] == 16 and len(frames) == record['num_frames'] == 16
    assert frames.shape[1:3] == (record['height'], record['width']) and min(frames.shape[1:3]) == 32
    assert record['height'] % 2 == record['width'] % 2 == 0
    portrait = name in ('a/b/tall.mkv', ROTATED)
    assert (record['height'] > record['width']) == portrait or record['height'] == record['width']
    assert record['caption'] == f'caption of {name}'
  wide = next(record for record in found if record['key'] == 'a/wide.mp4#1')
  frames = video.decode_video(wide['video'])[0]
  expected_levels = _levels(80)[transforms.nearest_frames(np.arange(80) / 25, 1 + np.arange(16) / 16)]
  np.testing.assert_allclose(frames[:, 16:, 16:].mean(axis=(1, 2, 3)), expected_levels, atol=3)
  rotated = video.decode_video(next(record for record in found if record['key'] == f'{ROTATED}#0')['video'])[0]
  assert rotated.shape[1:3] == (42, 32)
  assert rotated[0, -1, 0, 0] > 150 and rotated[0, 0, 0, 0] < 150  # the red corner turned to the bottom left


def test_every_bad_input_is_listed_with_its_reason(prepared):
  _, manifest = prepared
  reasons = {entry['path']: entry['reason'] for entry in manifest['skipped']}
  expected = {name: spec[-1] for name, spec in VIDEOS.items() if isinstance(spec[-1], str)}
  assert set(reasons) == set(expected) | set(BAD)
  for name, reason in expected.items():
    assert reasons[name] == reason
  for name, reason in BAD.items():
    assert reasons[name].startswith(reason), (name, reasons[name])


def test_manifests_with_spans(collection, tmp_path):
  (collection / 'manifest.csv').write_text('\n'.join([
      'path,caption,start,end',
      'videos/a/wide.mp4,wide middle,0.5,2.7',  # 2.2 s: two clips, the first from 0.5 s
      'videos/a/wide.mp4,the same span again,0.5,2.7',
      'videos/short.mp4,starts too late,5,',
      'videos/ntsc.mp4,ends before it starts,1.5,1',
      'missing.mp4,a missing file,,',
  ]) + '\n')
  manifest = _run(collection, tmp_path / 'csv', videos='', captions='', manifest=str(collection / 'manifest.csv'))
  found = {record['key']: record for record in _records(tmp_path / 'csv')}
  assert sorted(found) == ['videos/a/wide.mp4@0.5-2.7#0', 'videos/a/wide.mp4@0.5-2.7#1']
  frames = video.decode_video(found['videos/a/wide.mp4@0.5-2.7#0']['video'])[0]
  expected_levels = _levels(80)[transforms.nearest_frames(np.arange(80) / 25, 0.5 + np.arange(16) / 16)]
  np.testing.assert_allclose(frames[:, 16:, 16:].mean(axis=(1, 2, 3)), expected_levels, atol=3)
  assert [(entry['path'], entry['reason']) for entry in manifest['skipped']] == [
      ('missing.mp4', 'missing file'),
      ('videos/a/wide.mp4', 'duplicate of manifest.csv line 2'),
      ('videos/ntsc.mp4', 'end 1 s is not after start 1.5 s (manifest.csv line 5)'),
      ('videos/short.mp4', 'start 5 s is past the end (0.60 s)'),
  ]

  # JSON Lines, paths relative to the manifest's folder or absolute, and the tails kept.
  (collection / 'lists').mkdir(exist_ok=True)
  (collection / 'lists' / 'manifest.jsonl').write_text('\n'.join(json.dumps(row) for row in [
      {'path': str(collection / 'videos/a/b/tall.mkv'), 'caption': 'tall', 'start': 0.25},  # 1 clip + 0.25 s
      {'path': '../videos/a/wide.mp4', 'caption': ' wide ', 'end': 2.5},  # 2 clips + 0.5 s
  ]) + '\n')
  manifest = _run(collection, tmp_path / 'jsonl', videos='', captions='', keep_tail=True, min_seconds=0.25,
                  min_frames=4, manifest=str(collection / 'lists' / 'manifest.jsonl'))
  found = {record['key']: record for record in _records(tmp_path / 'jsonl')}
  tall, wide = str(collection / 'videos/a/b/tall.mkv@0.25-'), str(collection / 'videos/a/wide.mp4@-2.5')
  assert {key: record['num_frames'] for key, record in found.items()} == {
      f'{tall}#0': 16, f'{tall}#1': 4, f'{wide}#0': 16, f'{wide}#1': 16, f'{wide}#2': 8}
  assert found[f'{wide}#2']['caption'] == 'wide' and not manifest['skipped']
  assert manifest['seconds'] == pytest.approx(3.75)


def test_worker_count_does_not_change_the_bytes(collection, prepared, tmp_path):
  reference, manifest = prepared
  assert _run(collection, tmp_path, workers=2) == manifest
  assert _shards(tmp_path) == _shards(reference)


def test_interrupted_run_resumes_without_duplicates(collection, prepared, tmp_path, monkeypatch):
  reference, manifest = prepared
  write_shard, written = prepare.write_shard, []

  def interrupted_after_one(out, name, *args):
    if written:
      raise KeyboardInterrupt
    written.append(name)
    return write_shard(out, name, *args)

  monkeypatch.setattr(prepare, 'write_shard', interrupted_after_one)
  with pytest.raises(KeyboardInterrupt):
    _run(collection, tmp_path)
  assert list(_shards(tmp_path)) == written and not (tmp_path / 'manifest.json').exists()
  (tmp_path / '.clips-00002-of-00003.array_record.tmp-999').write_bytes(b'a killed run left this')

  monkeypatch.setattr(prepare, 'write_shard', lambda out, name, *args: written.append(name) or write_shard(
      out, name, *args))
  assert _run(collection, tmp_path) == manifest
  assert sorted(written) == list(_shards(reference))  # each shard written once
  assert _shards(tmp_path) == _shards(reference)
  assert not list(tmp_path.glob('.*.tmp-*'))
  keys = [record['key'] for record in _records(tmp_path)]
  assert len(keys) == len(set(keys)) == manifest['counts']['clips_written']

  lost = written[1]
  (tmp_path / lost).unlink()  # a shard lost after its marker was written is written again, alone
  written.clear()
  assert _run(collection, tmp_path) == manifest and written == [lost]
  assert _shards(tmp_path) == _shards(reference)
  with pytest.raises(prepare.PrepareError, match='--size=32.*--size=48'):
    _run(collection, tmp_path, size=48)


def test_a_shard_interrupted_while_written_leaves_no_file(collection, tmp_path, monkeypatch):
  encoded_record, started = clips_lib.encoded_record, set()

  def interrupted_at_a_shards_second_clip(clip, options):
    shard = prepare.shard_of(clip.key, FAST['num_shards'])
    if shard in started:
      raise KeyboardInterrupt
    started.add(shard)
    return encoded_record(clip, options)

  monkeypatch.setattr(clips_lib, 'encoded_record', interrupted_at_a_shards_second_clip)
  with pytest.raises(KeyboardInterrupt):
    _run(collection, tmp_path)
  shards = sorted(path.name for path in tmp_path.glob('*.array_record'))
  assert len(shards) < FAST['num_shards'] and not list(tmp_path.glob('.*.tmp-*'))
  assert shards == sorted(path.stem for path in (tmp_path / prepare.DONE).glob('*.json'))  # only complete ones


def _cli(*args):
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  return subprocess.run([sys.executable, '-m', 'lumiere_jax.cli.data', *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def test_command_line_and_training_reads_the_output(collection, prepared, tmp_path):
  out = tmp_path / 'out'
  flags_ = [f'--{name}={value}' for name, value in FAST.items()]
  result = _cli('prepare', f'--videos={collection / "videos"}', f'--captions={collection / "captions.csv"}',
                f'--out={out}', '--workers=2', *flags_)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'wrote 9 clips (9.0 s of video) from 17 inputs in 3 shards; skipped 11 (' in result.stdout
  assert f'manifest: {out / "manifest.json"}' in result.stdout
  assert _shards(out) == _shards(prepared[0])

  config = config_lib.load('stage=base,size=tiny')
  config.unlock()
  config.data.source = str(out / '*.array_record')
  config.lock()
  assert sorted(pipeline.read_keys(config)) == sorted(record['key'] for record in _records(out))

  shutil.copy(collection / 'videos' / 'empty.mp4', tmp_path / 'empty.mp4')
  (tmp_path / 'bad.csv').write_text('path,caption\nempty.mp4,nothing to see\n')
  result = _cli('prepare', f'--manifest={tmp_path / "bad.csv"}', f'--out={tmp_path / "none"}', '--workers=1')
  assert result.returncode != 0 and 'no clips written: zero-byte file: 1' in result.stderr
  assert 'Traceback' not in result.stderr
  assert sorted(path.name for path in (tmp_path / 'none').iterdir()) == ['.prepare.lock', 'manifest.json']
  result = _cli('prepare', f'--manifest={tmp_path / "bad.csv"}', f'--out={tmp_path / "none"}', '--size=64')
  assert result.returncode != 0 and 'no clips written: zero-byte file: 1' in result.stderr  # not refused: unpinned
