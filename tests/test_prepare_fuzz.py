"""`lumiere-data prepare` over every kind of bad input at once: each is a listed skip with its real cause, the run
never stops for one of them, and every valid input still gives its clips. Also the run-level refusals (a bad --out or
option) and a run that writes no clip."""

import fractions
import json
import math
import os
import wave

import av
import numpy as np
import pytest

from lumiere_jax.data import records
from lumiere_jax.ingest import clips as clips_lib, options as options_lib, prepare, video_reader

SETTINGS = dict(clip_seconds=1.0, size=32, min_frames=4, max_pixels=4_000_000, num_shards=2)
NON_UTF8_NAME = b'caf\xe9.mp4'

# The manifest's rows, in order (raw bytes: BOM, non-UTF-8 names and captions, broken JSON); each with what becomes of
# it: ('clips', keys) or ('skip', path as listed, the start of its reason).
ROWS = [
    (b'\xef\xbb\xbf{"path": "good.mp4", "caption": "a good clip"}', ('clips', ['good.mp4#0'])),
    (b'{"path": "good.mp4", "caption": "the same file again"}',
     ('skip', 'good.mp4', 'duplicate of manifest.jsonl line 1')),
    (b'{"path": "good.mp4", "caption": "from 0.1 s", "start": 0.1}', ('clips', ['good.mp4@0.1-#0'])),
    (b'{"path": "good.mp4", "caption": "backwards", "start": 1, "end": 0.5}',
     ('skip', 'good.mp4', 'end 0.5 s is not after start 1 s (manifest.jsonl line 4)')),
    (b'{"path": "later.mp4", "caption": "caf\xe9 in latin-1"}',
     ('skip', 'later.mp4', 'caption is not UTF-8 (manifest.jsonl line 5)')),
    (b'{"path": "later.mp4", "caption": "   "}', ('skip', 'later.mp4', 'empty caption (manifest.jsonl line 6)')),
    (b'{"path": "later.mp4", "caption": "x", "start": "soon"}',
     ('skip', 'later.mp4', "start/end 'soon' is not a number of seconds >= 0 (manifest.jsonl line 7)")),
    (b'{"path": "later.mp4", "caption": "kept: the rows above claimed nothing"}', ('clips', ['later.mp4#0'])),
    (b'{"path": "' + NON_UTF8_NAME + b'", "caption": "a file name that is not UTF-8"}',
     ('clips', ['caf\\xe9.mp4#0'])),
    (b'{"path": "good.mp4", "caption": "cut off', ('skip', 'manifest.jsonl line 10', 'not JSON: ')),
    (b'[1, 2]', ('skip', 'manifest.jsonl line 11', 'not a JSON object')),
    (b'{"caption": "no path"}', ('skip', 'manifest.jsonl line 12', 'no path')),
    (b'{"path": "zero.mp4", "caption": "c"}', ('skip', 'zero.mp4', 'zero-byte file')),
    (b'{"path": "truncated.mp4", "caption": "c"}', ('skip', 'truncated.mp4', 'undecodable: ')),
    (b'{"path": "garbage.mp4", "caption": "c"}', ('skip', 'garbage.mp4', 'undecodable: ')),
    (b'{"path": "audio.wav", "caption": "c"}', ('skip', 'audio.wav', 'no video stream')),
    (b'{"path": "one_frame.mp4", "caption": "c"}', ('skip', 'one_frame.mp4', 'shorter than one clip (0.04 s')),
    # FFmpeg refuses the header itself: its own words, not "Device or resource busy" (the errno of its return code).
    (b'{"path": "huge_header.y4m", "caption": "c"}',
     ('skip', 'huge_header.y4m', 'undecodable: Picture size 20000x20000 is invalid')),
    (b'{"path": "huge.y4m", "caption": "c"}', ('skip', 'huge.y4m', 'resolution 3000x3000 above --max_pixels')),
    # 2200x2 at --size 32 would be 35200x32 frames: over the bound, skipped when planned.
    (b'{"path": "wide.y4m", "caption": "c"}', ('skip', 'wide.y4m', 'output frames too large (35200x32 from 2200x2')),
    # 1100x2 -> 17600x32: under the (raised) bound, so it reaches libx264, which refuses it: that clip is skipped.
    (b'{"path": "wide_for_x264.y4m", "caption": "c"}',
     ('skip', 'wide_for_x264.y4m', 'not encodable: ExternalError: invalid width x height (17600x32)')),
    (b'{"path": "decode_fails.mp4", "caption": "c"}',
     ('skip', 'decode_fails.mp4', 'unreadable frames: MemoryError: injected')),
    (b'{"path": "loop.mp4", "caption": "c"}', ('skip', 'loop.mp4', 'unreadable: Too many levels of symbolic links')),
    (b'{"path": "dangling.mp4", "caption": "c"}', ('skip', 'dangling.mp4', 'broken symbolic link')),
    (b'{"path": "missing.mp4", "caption": "c"}', ('skip', 'missing.mp4', 'missing file')),
    (b'{"path": "folder.mp4", "caption": "c"}', ('skip', 'folder.mp4', 'not a file')),
]


def _write_mp4(path, num_frames, height=32, width=48):
  with av.open(str(path), 'w') as container:
    stream = container.add_stream('libx264', rate=fractions.Fraction(25))
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    for i in range(num_frames):
      frame = np.full((height, width, 3), 8 * i, np.uint8)
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())


def _write_y4m(path, width, height, num_frames, frame_bytes=None):
  """Raw YUV 4:2:0 frames; `frame_bytes` less than a frame declares a size the file does not hold."""
  size = frame_bytes if frame_bytes is not None else width * height * 3 // 2
  with open(path, 'wb') as f:
    f.write(f'YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n'.encode())
    for _ in range(num_frames):
      f.write(b'FRAME\n' + bytes([128]) * size)


def _write_audio(path):
  with wave.open(str(path), 'wb') as audio:
    audio.setnchannels(1)
    audio.setsampwidth(2)
    audio.setframerate(8000)
    audio.writeframes(bytes(3200))


@pytest.fixture(scope='module')
def collection(tmp_path_factory):
  """A folder with every case of ROWS and its manifest.jsonl."""
  root = tmp_path_factory.mktemp('fuzz')
  for name in ('good.mp4', 'later.mp4', 'decode_fails.mp4', 'truncated.mp4'):
    _write_mp4(root / name, 30)
  with open(os.path.join(bytes(root), NON_UTF8_NAME), 'wb') as f:
    f.write((root / 'good.mp4').read_bytes())
  data = (root / 'truncated.mp4').read_bytes()
  (root / 'truncated.mp4').write_bytes(data[:len(data) // 2])
  (root / 'garbage.mp4').write_bytes(np.random.default_rng(0).bytes(3000))
  (root / 'zero.mp4').write_bytes(b'')
  _write_audio(root / 'audio.wav')
  _write_mp4(root / 'one_frame.mp4', 1)
  _write_y4m(root / 'huge_header.y4m', 20000, 20000, 1, frame_bytes=100)
  _write_y4m(root / 'huge.y4m', 3000, 3000, 1, frame_bytes=100)
  _write_y4m(root / 'wide.y4m', 2200, 2, 30)
  _write_y4m(root / 'wide_for_x264.y4m', 1100, 2, 30)
  (root / 'loop.mp4').symlink_to('loop.mp4')
  (root / 'dangling.mp4').symlink_to('nowhere.mp4')
  (root / 'folder.mp4').mkdir()
  (root / 'manifest.jsonl').write_bytes(b'\n'.join(row for row, _ in ROWS) + b'\n')
  return root


def test_every_bad_input_is_a_listed_skip_and_no_valid_clip_is_lost(collection, tmp_path, monkeypatch):
  read_frames = video_reader.read_frames

  def failing_for_one_file(path, *args):
    if 'decode_fails' in path:
      raise MemoryError('injected')
    return read_frames(path, *args)

  monkeypatch.setattr(video_reader, 'read_frames', failing_for_one_file)
  monkeypatch.setattr(clips_lib, 'MAX_SIDE', 20000)  # lets libx264's own limit (16384) be met for wide_for_x264
  options = options_lib.Options(manifest=str(collection / 'manifest.jsonl'), **SETTINGS)
  manifest = prepare.prepare(options, tmp_path, workers=1, log=lambda line: None)

  expected_keys = sorted(key for _, (kind, *rest) in ROWS if kind == 'clips' for key in rest[0])
  found = []
  for shard in manifest['shards']:
    reader = records.array_record_module.ArrayRecordReader(str(tmp_path / shard['name']))
    found += [records.decode_record(data) for data in reader.read_all()]
    reader.close()
  assert sorted(record['key'] for record in found) == expected_keys
  assert all(record['num_frames'] == 16 and record['height'] == 32 for record in found)
  assert manifest['counts'] == dict(inputs=len(ROWS), clips_written=len(expected_keys),
                                    skipped=len(ROWS) - len(expected_keys))
  assert manifest['seconds'] == len(expected_keys)

  expected = sorted((path, reason) for _, (kind, *rest) in ROWS if kind == 'skip' for path, reason in [rest])
  listed = sorted((entry['path'], entry['reason']) for entry in manifest['skipped'])
  assert len(listed) == len(expected)
  for (path, reason), (want_path, want_reason) in zip(listed, expected):
    assert path == want_path and reason.startswith(want_reason), (path, reason, want_reason)
  assert json.loads((tmp_path / 'manifest.json').read_text()) == manifest
  assert (tmp_path / prepare.STATE).exists()


@pytest.mark.parametrize('case, message', [
    ('out is a file', 'is a file, not a folder'),
    ('out under a file', 'cannot write there (Not a directory'),
    ('out not writable', 'cannot write there (Is a directory'),
    ('clip_seconds nan', '--clip_seconds must be a finite number, got nan'),
    ('fps inf', '--fps must be a finite number, got inf'),
    ('videos is a file', 'not a folder'),
])
def test_run_level_problems_are_clear_refusals(collection, tmp_path, case, message):
  (tmp_path / 'file').write_text('not a folder')
  (tmp_path / 'locked' / '.prepare.lock').mkdir(parents=True)  # a lock file this run cannot open, even as root
  out = {'out is a file': tmp_path / 'file', 'out under a file': tmp_path / 'file' / 'out',
         'out not writable': tmp_path / 'locked'}.get(case, tmp_path / 'out')
  options = dict(manifest=str(collection / 'manifest.jsonl'))
  options |= {'clip_seconds nan': dict(clip_seconds=math.nan), 'fps inf': dict(fps=math.inf),
              'videos is a file': dict(manifest='', videos=str(tmp_path / 'file'),
                                       captions=str(collection / 'manifest.jsonl'))}.get(case, {})
  with pytest.raises(prepare.PrepareError, match=message.replace('(', r'\(')):
    prepare.prepare(options_lib.Options(**options), out, workers=1, log=lambda line: None)


def test_a_run_of_short_inputs_hints_the_flags_and_pins_nothing(collection, tmp_path):
  (tmp_path / 'short.jsonl').write_text(json.dumps({'path': str(collection / 'good.mp4'), 'caption': 'c'}) + '\n')
  options = dict(manifest=str(tmp_path / 'short.jsonl'), clip_seconds=2.0, size=32, min_frames=4)
  manifest = prepare.prepare(options_lib.Options(**options), tmp_path / 'out', workers=1, log=lambda line: None)
  assert manifest['counts']['clips_written'] == 0 and manifest['shards'] == []
  message = prepare.no_clips(manifest)
  assert message.startswith('no clips written: shorter than one clip: 1; for inputs shorter than --clip_seconds=2, '
                            'give a smaller --clip_seconds, or --keep_tail')
  assert sorted(path.name for path in (tmp_path / 'out').iterdir()) == ['.prepare.lock', 'manifest.json']

  options['clip_seconds'] = 1.0  # the rerun with other options is not refused
  manifest = prepare.prepare(options_lib.Options(**options), tmp_path / 'out', workers=1, log=lambda line: None)
  assert manifest['counts']['clips_written'] == 1
  assert '(1.0 s of video)' in prepare.summary(manifest, tmp_path / 'out')
