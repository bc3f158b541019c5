"""Progress lines (`lumiere_jax/progress.py`): the ETA leaves out the first (compiling) unit, lines are rate-limited
whole lines, and the long loops (denoising steps, eval chunks, the synthetic set, `lumiere-data prepare`) report
through it."""

import csv
import re

import numpy as np
import pytest

from lumiere_jax import progress, sample as sample_lib
from lumiere_jax.data import synthetic, video
from lumiere_jax.eval import protocol
from lumiere_jax.ingest import options as options_lib, prepare
from micro import micro_config, one_device_setup, trained_looking_params

DONE_LINE = re.compile(r'^\[(\d+)/(\d+) 100% eta +0s\] .* \(done in [\d.]+s\)$')


class FakeClock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def test_eta_comes_from_the_rate_after_the_first_unit():
  clock, lines = FakeClock(), []
  bar = progress.Progress(10, 'sampling', every_s=5.0, enabled=True, log=lines.append, clock=clock)
  assert lines == ['sampling: 10 to do...']
  clock.now += 100  # the first unit compiles
  bar.advance()
  assert bar.eta_s() == float('inf') and lines[-1] == '[ 1/10  10% eta      ?] sampling'  # no rate yet
  for _ in range(3):
    clock.now += 2  # then 2 s a unit
    bar.advance()
  assert bar.eta_s() == pytest.approx(6 * 2.0)  # 6 units left at 2 s each; the 100 s compile left out
  assert lines[-1] == '[ 4/10  40% eta    12s] sampling'


def test_lines_are_rate_limited_whole_lines_ending_with_a_done_line():
  clock, lines = FakeClock(), []
  bar = progress.Progress(100, 'building', every_s=5.0, enabled=True, log=lines.append, clock=clock)
  for _ in range(100):
    clock.now += 0.5
    bar.advance(note='x')
  # one start line, one line per 5 s of the 50 s (the 10th falls on the last unit: the done line), no \r anywhere
  assert len(lines) == 1 + 10 and not any('\r' in line for line in lines)
  assert DONE_LINE.match(lines[-1]) and '(done in 50.0s)' in lines[-1]
  assert lines[1].startswith('[ 10/100  10% eta ') and lines[1].endswith('building x')


def test_a_disabled_progress_prints_nothing(capsys):
  bar = progress.Progress(3, 'other process', enabled=False)
  for _ in range(3):
    bar.advance()
  assert capsys.readouterr().out == '' and bar.done == 3


def test_track_counts_a_unit_when_its_loop_body_has_run():
  clock, lines = FakeClock(), []
  seen = []
  for item in progress.track('abc', 'letters', every_s=0.0, enabled=True, log=lines.append, clock=clock):
    clock.now += 1
    seen.append(item)
  assert seen == ['a', 'b', 'c']
  assert [line.split(']')[0] for line in lines[1:]] == ['[1/3  33% eta      ?', '[2/3  67% eta     1s',
                                                       '[3/3 100% eta     0s']


def test_prefix_is_the_training_lines_look():
  assert progress.prefix(10, 100, 90.0, width=7) == '[     10/100  10% eta    90s]'
  assert progress.prefix(0, 0, float('inf')) == '[0/0 100% eta      ?]'


def test_eval_chunks_report_progress_and_what_was_done_before(tmp_path, capsys):
  compute = lambda chunk: {'values': np.full(2, chunk)}  # noqa: E731
  protocol.run_chunks(tmp_path, 'i3d', 2, compute)
  assert protocol.run_chunks(tmp_path, 'i3d', 4, compute, what='features') == 2
  out = capsys.readouterr().out.splitlines()
  assert out[0] == 'i3d: 2 to do...' and DONE_LINE.match(out[1])
  assert out[2] == 'features (2 chunks done by an earlier run): 2 to do...' and DONE_LINE.match(out[3])


def test_building_the_synthetic_set_reports_progress(tmp_path, capsys):
  synthetic.ensure_synthetic_dataset(tmp_path, num_clips=2, image_size=16, num_frames=4, fps=8, num_shards=1)
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith('building the synthetic set ') and out[0].endswith(': 2 to do...')
  assert DONE_LINE.match(out[-1]) and out[-1].startswith('[2/2 ')
  synthetic.ensure_synthetic_dataset(tmp_path, num_clips=2, image_size=16, num_frames=4, fps=8, num_shards=1)
  assert capsys.readouterr().out == ''  # already built: nothing to report


def test_prepare_reports_planning_and_shards(tmp_path):
  folder = tmp_path / 'videos'
  folder.mkdir()
  rows = []
  for i in range(2):
    frames = np.full((16, 32, 32, 3), 40 + 60 * i, np.uint8)
    (folder / f'v{i}.mp4').write_bytes(video.encode_mp4(frames, 16))
    rows.append((f'v{i}.mp4', f'clip {i}'))
  with open(tmp_path / 'captions.csv', 'w', newline='') as f:
    csv.writer(f).writerows([('path', 'caption'), *rows])
  lines = []
  options = options_lib.Options(videos=str(folder), captions=str(tmp_path / 'captions.csv'), clip_seconds=1.0,
                                size=32, num_shards=2)
  manifest = prepare.prepare(options, tmp_path / 'out', workers=1, log=lines.append)
  assert manifest['counts']['clips_written'] == 2
  planning = [line for line in lines if 'planning' in line]
  assert planning[0].endswith(': 2 to do...') and DONE_LINE.match(planning[-1])
  shards = [line for line in lines if 'writing shards' in line]
  assert shards[0] == 'writing shards: 2 to do...' and DONE_LINE.match(shards[-1])
  assert 'clips)' in shards[-1]  # the last shard's name and clip count


def test_sampling_reports_its_denoising_steps_unless_told_not_to(capsys):
  config = micro_config('base')
  spec, params = one_device_setup(config).spec, trained_looking_params(config)
  sampler, prompts = sample_lib.make_sampler(spec, config), ['a red circle moving right', 'a blue square moving up']
  reported = sample_lib.generate(spec, params, config, prompts, seed=3, sampler=sampler)
  out = capsys.readouterr().out.splitlines()
  steps = config.sample.steps
  assert out[:2] == ['compiling the sampler for a batch of 2...', f'sampling 2 clips: denoising steps: {steps} to do...']
  assert DONE_LINE.match(out[-1]) and out[-1].startswith(f'[{steps}/{steps} ') and len(out) <= steps + 2
  again = sample_lib.generate(spec, params, config, prompts, seed=3, sampler=sampler)
  assert capsys.readouterr().out.splitlines()[0].startswith('sampling 2 clips')  # compiled once, kept
  quiet = sample_lib.generate(spec, params, config, prompts, seed=3, sampler=sampler, show_progress=False)
  assert capsys.readouterr().out == ''
  np.testing.assert_array_equal(quiet, reported)
  np.testing.assert_array_equal(again, reported)
