"""The grain pipeline: batch contents, exact resume (also through orbax), per-process sharding, bad records."""

import importlib.util
import json
import pathlib
import re

import grain
import msgpack
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags

from lumiere_jax.data import pipeline, records, synthetic, tokenizers, video

_SPEC = importlib.util.spec_from_file_location(
    'lumiere_config', pathlib.Path(__file__).resolve().parent.parent / 'configs' / 'lumiere.py')
CONFIGS = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(CONFIGS)
CAPTION = re.compile(rf'a ({"|".join(synthetic.COLOURS)}) ({"|".join(synthetic.SHAPES)}) moving '
                     rf'({"|".join(synthetic.DIRECTIONS)})')
BAD_REASONS = {'undecodable video': 2, 'empty record': 1, 'too short': 2, 'missing field': 1, 'empty caption': 1,
               'not msgpack': 1}

flags.FLAGS.mark_as_parsed()  # grain workers read absl flags; outside app.run they must be marked parsed


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('data')


def make_config(data_dir, stage='base', **data):
  config = CONFIGS.get_config(f'stage={stage},size=tiny')
  config.unlock()
  config.model.image_size, config.model.num_frames = 32, 8
  config.train.batch_size = 4
  config.data.update(dict(synthetic_dir=str(data_dir), synthetic_clips=32, **data))
  config.lock()
  return config


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches, others):
  assert len(batches) == len(others)
  for batch, other in zip(batches, others):
    assert batch.keys() == other.keys()
    for key in batch:
      np.testing.assert_array_equal(batch[key], other[key])


@pytest.mark.parametrize('stage, frames', [('t2i', 1), ('base', 8)])
def test_batches_match_their_captions(data_dir, stage, frames):
  config = make_config(data_dir, stage)
  batch = _take(pipeline.make_train_iterator(config), 2)[-1]
  assert set(batch) == {'video', 'tokens', 'token_mask'}
  assert batch['video'].shape == (4, frames, 32, 32, 3) and batch['video'].dtype == np.uint8
  assert batch['video'].max() > 190  # the shapes' saturated colours
  assert batch['tokens'].shape == batch['token_mask'].shape == (4, 32)
  assert batch['tokens'].dtype == np.int32 and batch['token_mask'].dtype == bool
  np.testing.assert_array_equal(batch['token_mask'], batch['tokens'] != tokenizers.PAD_ID)
  for clip, text in zip(batch['video'], tokenizers.build_tokenizer(config.text).decode(batch['tokens'])):
    colour, _, direction = CAPTION.fullmatch(text).groups()
    judged = synthetic.describe_clip(clip)
    assert judged == dict(colour=colour, direction=direction if frames > 1 else None)


def test_evaluation_reading_is_one_fixed_pass(data_dir):
  config = make_config(data_dir)
  first, second = (list(pipeline.make_train_iterator(config, train=False)) for _ in range(2))
  assert len(first) == 32 // 4
  _assert_same(first, second)


@pytest.mark.parametrize('num_workers', [0, 1])
def test_resume_gives_the_same_next_batches(data_dir, num_workers):
  config = make_config(data_dir, num_workers=num_workers)
  iterator = pipeline.make_train_iterator(config)
  _take(iterator, 6)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = _take(iterator, 4)  # crosses into the second, reshuffled epoch (8 batches per epoch)
  iterator.close()
  resumed = pipeline.make_train_iterator(config)
  resumed.set_state(state)
  _assert_same(_take(resumed, 4), expected)
  assert resumed.stats == dict(records_read=40, records_bad=0, bad_reasons={})
  resumed.close()


def test_orbax_composite_round_trip(data_dir, tmp_path):
  config = make_config(data_dir)
  iterator = pipeline.make_train_iterator(config)
  _take(iterator, 3)
  manager = ocp.CheckpointManager(tmp_path / 'checkpoints')
  manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = _take(iterator, 2)
  restored = pipeline.make_train_iterator(config)
  manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  manager.close()
  _assert_same(_take(restored, 2), expected)


def test_processes_read_disjoint_halves(data_dir):
  config = make_config(data_dir)
  halves = [pipeline.read_keys(config, process_index=i, process_count=2) for i in range(2)]
  assert len(halves[0]) == len(halves[1]) == 16
  assert not set(halves[0]) & set(halves[1])
  assert set(halves[0]) | set(halves[1]) == set(pipeline.read_keys(config)) and len(set(halves[0] + halves[1])) == 32
  assert next(pipeline.make_train_iterator(config, process_index=1, process_count=2))['video'].shape[0] == 2
  with pytest.raises(ValueError, match='train.batch_size'):
    pipeline.make_train_iterator(config, process_count=3)


@pytest.mark.parametrize('process_count', [2, 3])
def test_process_slices_are_equal_and_drop_only_the_remainder(data_dir, process_count):
  config = make_config(data_dir)
  with config.unlocked():
    config.data.synthetic_clips = 34
  slices = [pipeline.read_keys(config, process_index=i, process_count=process_count) for i in range(process_count)]
  assert {len(keys) for keys in slices} == {34 // process_count}
  union = set().union(*slices)
  assert len(union) == sum(map(len, slices)) == 34 - 34 % process_count  # disjoint, the remainder dropped


def test_unmatched_source_names_the_field(tmp_path):
  with pytest.raises(ValueError, match='data.source'):
    pipeline.make_train_iterator(make_config(tmp_path, source=str(tmp_path / 'none-*.array_record')))


def _record(rng, **overrides) -> bytes:
  frames, caption, _ = synthetic.make_clip(rng, 32, 8)
  fields = dict(key=f'clip-{rng.integers(1 << 40)}', caption=caption, video=video.encode_mp4(frames, 16), fps=16.0,
                num_frames=len(frames), height=32, width=32)
  return records.encode_record(**{**fields, **overrides})


@pytest.fixture(scope='module')
def mixed_source(tmp_path_factory):
  """24 good records and 8 bad ones (BAD_REASONS), interleaved; returns the shard glob."""
  rng = np.random.default_rng(0)
  short = video.encode_mp4(synthetic.make_clip(rng, 32, 2)[0], 16)  # 3 frames; 8 are needed
  mp4 = video.encode_mp4(synthetic.make_clip(rng, 32, 8)[0], 16)
  missing_caption = records.decode_record(_record(rng))
  del missing_caption['caption']
  bad = [
      _record(rng, video=b'not a video' * 10),
      _record(rng, video=mp4[:len(mp4) // 2]),
      b'',
      _record(rng, video=short, num_frames=3),
      _record(rng, video=short),  # declares 10 frames, holds 3
      msgpack.packb(missing_caption),
      _record(rng, caption=''),
      b'\xc1 not msgpack',
  ]
  good = [_record(rng) for _ in range(24)]
  mixed = [record for i in range(8) for record in good[3 * i:3 * i + 3] + [bad[i]]]
  directory = tmp_path_factory.mktemp('mixed')
  records.write_shards(mixed, directory, prefix='mixed', num_shards=2)
  return str(directory / 'mixed-*.array_record')


@pytest.mark.parametrize('num_workers', [0, 1])
def test_bad_records_are_skipped_and_counted(tmp_path, mixed_source, num_workers):
  config = make_config(tmp_path, source=mixed_source, max_bad_fraction=0.5, num_workers=num_workers)
  iterator = pipeline.make_train_iterator(config, train=False)
  batches = list(iterator)
  iterator.close()
  assert len(batches) == 24 // 4
  assert all(b['video'].dtype == np.uint8 and b['video'].shape == (4, 8, 32, 32, 3) for b in batches)
  assert iterator.stats == dict(records_read=32, records_bad=8, bad_reasons=BAD_REASONS)


def test_bad_record_counts_survive_resume(tmp_path, mixed_source):
  config = make_config(tmp_path, source=mixed_source, max_bad_fraction=0.5)
  iterator = pipeline.make_train_iterator(config)
  _take(iterator, 5)
  state, stats = iterator.get_state(), iterator.stats
  assert stats['records_bad'] > 0
  expected = _take(iterator, 4)
  resumed = pipeline.make_train_iterator(config)
  resumed.set_state(state)
  assert resumed.stats == stats
  _assert_same(_take(resumed, 4), expected)
  assert resumed.stats == iterator.stats


def test_too_many_bad_records_stop_the_job(tmp_path, mixed_source):
  iterator = pipeline.make_train_iterator(make_config(tmp_path, source=mixed_source, max_bad_fraction=0.1,
                                                     min_records_for_bad_fraction=4))
  with pytest.raises(pipeline.BadDataError, match=r'data\.max_bad_fraction=0\.1') as info:
    _take(iterator, 8)
  assert any(reason in str(info.value) for reason in BAD_REASONS)
  stats = iterator.stats
  assert stats['records_bad'] > 0.1 * stats['records_read'] and stats['records_read'] >= 4
