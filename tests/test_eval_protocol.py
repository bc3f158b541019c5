"""The UCF101 zero-shot protocol: class allocation, resumable chunks, the report, the training hook and lumiere-eval."""

import contextlib
import fractions
import importlib.resources
import io
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from lumiere_jax import config as config_lib
from lumiere_jax import validation
from lumiere_jax.eval import checks as eval_checks, i3d, inception_score, protocol, ucf101, zero_shot
from lumiere_jax.train import main as train_main
from micro import micro_config
from test_cli import ROOT, _env
from test_ucf101 import CLASSES, root, write_ucf101  # pylint: disable=unused-import  (root: a fixture)


def _largest_remainder(clips_per_class, total):
  """The Hamilton apportionment in exact rational arithmetic: floors, then one more to the largest remainders."""
  quotas = [fractions.Fraction(int(count) * total, int(sum(clips_per_class))) for count in clips_per_class]
  seats = [math.floor(quota) for quota in quotas]
  order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - seats[i]), i))
  for i in order[:total - sum(seats)]:
    seats[i] += 1
  return seats


def test_allocation_sums_exactly_and_stays_within_one_of_proportional():
  rng = np.random.default_rng(0)
  clips_per_class = rng.integers(90, 170, 101)  # UCF101's range of clips per class
  frequencies = clips_per_class / clips_per_class.sum()
  for total in (4, 101, 997, 10_235):
    counts = protocol.allocate(frequencies, total)
    assert counts.sum() == total and counts.dtype == np.int64
    assert np.abs(counts - total * frequencies).max() < 1, total
    np.testing.assert_array_equal(counts, _largest_remainder(clips_per_class, total))
  # 4 x (2, 3, 4) / 9 = (0.89, 1.33, 1.78): floors (0, 1, 1), the two largest remainders (0.89, 0.78) get one more.
  np.testing.assert_array_equal(protocol.allocate(np.array([2, 3, 4]) / 9, 4), [1, 1, 2])
  with pytest.raises(ValueError, match='non-negative'):
    protocol.allocate(np.array([1.0, -1.0]), 3)


def test_our_prompts_cover_the_101_classes_in_tfds_order():
  labels = (importlib.resources.files('tensorflow_datasets') / 'video' / 'ucf101_labels.txt').read_text().split()
  prompts = protocol.load_prompts(config_lib.load(path=config_lib.EVAL_CONFIG_FILE).prompts, labels)
  assert len(labels) == len(set(prompts)) == 101
  assert all(prompt == prompt.strip() and prompt[0].islower() for prompt in prompts)  # sentences, not class names
  with pytest.raises(ValueError, match=r"no prompt for the UCF101 classes \['Zorbing'\]"):
    protocol.load_prompts(config_lib.EVAL_CONFIG_FILE.parent / 'ucf101_prompts.json', labels + ['Zorbing'])


def test_plan_follows_the_class_frequencies_in_mixed_chunks():
  plan = protocol.make_plan(np.array([2, 3, 4]) / 9, ['p0', 'p1', 'p2'], num_videos=90, chunk_size=8, seed=1)
  np.testing.assert_array_equal(np.bincount(plan.labels), [20, 30, 40])
  assert plan.num_chunks == 12 and len(plan.chunk_labels(11)) == 2
  assert len(plan.chunk_prompts(11)) == 8  # the short last chunk is padded with its own prompts
  assert set(plan.chunk_prompts(11)) == {f'p{label}' for label in plan.chunk_labels(11)}
  assert len(set(plan.labels[:8])) > 1  # shuffled: not one class after another
  same = protocol.make_plan(np.array([2, 3, 4]) / 9, ['p0', 'p1', 'p2'], num_videos=90, chunk_size=8, seed=1)
  assert same.fingerprint() == plan.fingerprint()
  other = protocol.make_plan(np.array([2, 3, 4]) / 9, ['p0', 'p1', 'p2'], num_videos=90, chunk_size=8, seed=2)
  assert other.fingerprint() != plan.fingerprint()


# ------------------------------------------------------------------------------------- protocol on fake models


def _mean_colour_features(videos):
  """A stand-in for I3D: per-channel means and the mean frame-to-frame change, (n, 4)."""
  videos = np.asarray(videos, np.float64)
  motion = np.abs(np.diff(videos, axis=1)).mean(axis=(1, 2, 3, 4))
  return np.concatenate([videos.mean(axis=(1, 2, 3)), motion[:, None]], axis=1).astype(np.float32)


def _probabilities(videos):
  logits = _mean_colour_features(videos)[:, :3] / 20
  return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


class _Generator:
  """Seeded noise videos; counts its calls and can fail at a given call, like an interrupted job."""

  def __init__(self, fail_at=None):
    self.calls, self.fail_at = 0, fail_at

  def __call__(self, prompts, seed):
    self.calls += 1
    if self.calls == self.fail_at:
      raise KeyboardInterrupt('interrupted')
    return np.random.default_rng(seed).integers(0, 256, (len(prompts), 16, 8, 8, 3), dtype=np.uint8)


def _eval_config(tmp_path, **fields):
  config = config_lib.load('n=10', config_lib.EVAL_CONFIG_FILE)
  config.update(dict(chunk_size=3, is_splits=2, reference_dir=str(tmp_path / 'reference')), **fields)
  prompts = tmp_path / 'prompts.json'
  prompts.write_text(json.dumps({name: f'a person doing {name}' for name in CLASSES}))
  config.prompts = str(prompts)
  return config


def _evaluate(config, generate, videos_dir, root):
  models = zero_shot.Models(generate, _mean_colour_features, _probabilities)
  return zero_shot.evaluate(config, models, ucf101_root=root, videos_dir=videos_dir,
                            model_record=dict(source='fake', step=7, fps=16))


def test_an_interrupted_evaluation_resumes_without_regenerating(tmp_path, root):
  config = _eval_config(tmp_path)  # 10 videos in 4 chunks of 3
  with pytest.raises(KeyboardInterrupt):
    _evaluate(config, _Generator(fail_at=3), tmp_path / 'videos', root)
  resumed = _Generator()
  report = _evaluate(config, resumed, tmp_path / 'videos', root)
  assert resumed.calls == 2 and report['generated']['chunks_generated_now'] == 2
  again = _Generator()
  assert _evaluate(config, again, tmp_path / 'videos', root)['fvd'] == report['fvd'] and again.calls == 0

  fresh = _evaluate(config, _Generator(), tmp_path / 'uninterrupted', root)
  assert fresh['fvd'] == pytest.approx(report['fvd'], rel=1e-12)
  videos = protocol.read_chunks(tmp_path / 'videos', 'videos', 4, 'videos')
  labels = protocol.read_chunks(tmp_path / 'videos', 'videos', 4, 'labels')
  assert videos.shape == (10, 16, 8, 8, 3) and videos.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(labels), [2, 3, 5])  # 10 x (1, 2, 3) / 6 train clips, +1 to the largest
  real = np.stack([ucf101.load_clip(clip) for clip in ucf101.read_split(root, 1, 'train')])
  want = i3d.fvd(_mean_colour_features(real), _mean_colour_features(videos))
  assert report['fvd'] == pytest.approx(want, rel=1e-9)
  assert report['inception_score']['mean'] == pytest.approx(inception_score.inception_score(
      _probabilities(videos), 2)[0], rel=1e-9)
  assert report['real'] | {'statistics': None} == dict(count=6, set='train', description=zero_shot.REAL_SETS['train'],
                                                       frames=16, fps=25.0, statistics=None)
  assert report['generated']['count'] == 10 and report['model']['step'] == 7 and set(report['seconds']) >= {
      'generate', 'generated_features', 'real_features', 'fvd', 'inception_score', 'total'}

  with pytest.raises(ValueError, match=r"another evaluation \(differs in \['plan'\]\)"):
    _evaluate(_eval_config(tmp_path, seed=5), _Generator(), tmp_path / 'videos', root)


def test_eval_config_errors_name_every_field():
  config = config_lib.load('n=1,real=test', config_lib.EVAL_CONFIG_FILE)
  config.update(dict(frames=8, chunk_size=0, is_splits=0, sample_steps=0))
  with pytest.raises(config_lib.ConfigError) as error:
    eval_checks.validate(config)
  for field in ('num_videos', 'frames', 'real_set', 'chunk_size', 'is_splits', 'sample_steps'):
    assert f'config.{field}:' in str(error.value)
  eval_checks.validate(config_lib.load(path=config_lib.EVAL_CONFIG_FILE))
  with pytest.raises(ValueError, match="config argument 'm=3'"):
    config_lib.load('m=3', config_lib.EVAL_CONFIG_FILE)


# ------------------------------------------------------------------------------------- training hook and CLI


class _FakeI3D:
  def __init__(self, mesh=None):
    del mesh

  def __call__(self, videos):
    return _mean_colour_features(videos)


@pytest.fixture(scope='module')
def ucf101_root(tmp_path_factory):
  return write_ucf101(tmp_path_factory.mktemp('ucf101'))


@pytest.fixture(scope='module')
def micro_run(tmp_path_factory, ucf101_root):
  """A 2-step micro run of 16-frame clips with an FVD (stand-in features) after each step: (workdir, stdout)."""
  workdir, data = tmp_path_factory.mktemp('run'), tmp_path_factory.mktemp('data')
  config = micro_config(data_dir=os.environ['LUMIERE_DATA_DIR'], **{  # the shared synthetic set
      'train.steps': 2, 'model.num_frames': 16, 'eval.fvd_every_steps': 1, 'eval.fvd_num_videos': 4,
      'eval.fvd_ucf101_dir': str(ucf101_root)})
  with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as stdout:
    patch.setattr(i3d, 'I3DFeatures', _FakeI3D)
    patch.setenv('LUMIERE_DATA_DIR', str(data))  # the reference cache of the stand-in features
    train_main.train(config, workdir, devices=jax.devices()[:1])
  assert list((data / 'ucf101_i3d').glob('ucf101-6clips-16f-*/i3d_stats.npz'))
  return workdir, stdout.getvalue()


def test_training_logs_a_periodic_fvd(micro_run):
  values = [float(line.split('fvd=')[1].split()[0]) for line in micro_run[1].splitlines() if 'fvd=' in line]
  assert len(values) == 2 and all(np.isfinite(values)) and min(values) > 0


def test_training_fvd_config_errors(root):
  cases = [({'eval.fvd_every_steps': -1}, 'eval.fvd_every_steps: -1 must be >= 0'),
           ({'model.num_frames': 16, 'eval.fvd_every_steps': 5}, "eval.fvd_ucf101_dir: '' is not a UCF101 root"),
           ({'eval.fvd_every_steps': 5, 'eval.fvd_ucf101_dir': str(root)}, 'I3D needs >= 9 frames'),
           ({'model.num_frames': 16, 'eval.fvd_every_steps': 5, 'eval.fvd_num_videos': 1,
             'eval.fvd_ucf101_dir': str(root)}, 'eval.fvd_num_videos: 1 must be >= 2')]
  for overrides, message in cases:
    with pytest.raises(config_lib.ConfigError, match=message):
      validation.validate(micro_config(**overrides), num_devices=1)
  validation.validate(micro_config(**{'model.num_frames': 16, 'eval.fvd_every_steps': 5,
                                      'eval.fvd_ucf101_dir': str(root)}), num_devices=1)


def test_lumiere_eval_writes_a_report(tmp_path, ucf101_root, micro_run):
  """The real I3D on 4 generated and 6 real clips."""
  out = tmp_path / 'report.json'
  (tmp_path / 'prompts.json').write_text(json.dumps({name: f'a person doing {name}' for name in CLASSES}))
  command = [sys.executable, '-m', 'lumiere_jax.cli.eval', '--config', 'configs/eval_ucf101.py:n=4',
             '--config.chunk_size=4', f'--config.reference_dir={tmp_path / "reference"}',
             f'--config.prompts={tmp_path / "prompts.json"}', '--config.sample_steps=2',
             '--workdir', str(micro_run[0]), '--ucf101', str(ucf101_root), '--out', str(out)]
  result = subprocess.run(command, cwd=ROOT, env=_env(tmp_path / 'data'), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  assert np.isfinite(report['fvd']) and report['fvd'] > 0 and report['inception_score'] is None
  assert report['generated'] | {'directory': None} == dict(count=4, frames=16, fps=16, chunks=1, chunks_generated_now=1,
                                                           directory=None)
  assert report['real']['count'] == 6 and report['resize'] == 'tf1-bilinear-224'
  assert report['model']['step'] == 2 and report['model']['steps'] == 2 and report['seeds']['base'] == 0
  assert len(list((tmp_path / 'report_videos').glob('videos-*.npz'))) == 1
  assert f'FVD {report["fvd"]:.2f}' in result.stdout
