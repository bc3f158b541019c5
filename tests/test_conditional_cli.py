"""`stage=conditional` trains from the command line (from a base run); `lumiere-sample --mode i2v|inpaint|cinemagraph`
writes decodable MP4s from it; bad input files are named."""

import subprocess
import sys

import pytest
from absl import app

from lumiere_jax.train import checkpoint
from cli_runs import BATCH, assert_decodable_clip, input_files, lumiere_sample, save_untrained  # noqa: F401
from test_cli import MICRO, ROOT, _env


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(tmp dir, the conditional run trained 2 steps by `lumiere-train` from an untrained base run)."""
  tmp = tmp_path_factory.mktemp('conditional')
  base = save_untrained(tmp / 'base', 'base')
  train = subprocess.run(
      [sys.executable, '-m', 'lumiere_jax.cli.train', '--config', 'configs/lumiere.py:stage=conditional,size=tiny',
       '--workdir', str(tmp / 'conditional'), *MICRO, '--config.train.steps=2', f'--config.train.batch_size={BATCH}',
       f'--config.model.init_from={base}'],
      cwd=ROOT, env=_env(tmp / 'data'), capture_output=True, text=True, timeout=600)
  assert train.returncode == 0, train.stderr[-3000:]
  assert 'conditional model' in train.stdout and 'loss=' in train.stdout
  assert checkpoint.resolve(tmp / 'conditional')[1] == 2
  return tmp, str(tmp / 'conditional')


def test_each_mode_writes_a_decodable_clip(run, lumiere_sample):  # noqa: F811
  tmp, workdir = run
  files = input_files(tmp)
  for mode, inputs in [('i2v', ['--image', files['in.png']]),
                       ('inpaint', ['--video', files['in.mp4'], '--mask', files['region.png']]),
                       ('cinemagraph', ['--image', files['in.png'], '--mask', files['region.png']])]:
    lumiere_sample('--workdir', workdir, '--mode', mode, *inputs, '--out', str(tmp / f'{mode}.mp4'))
    assert_decodable_clip(tmp / f'{mode}.mp4')


def test_bad_input_files_are_named(run, lumiere_sample):  # noqa: F811
  tmp, workdir = run
  files = input_files(tmp)
  for inputs, message in [
      (['--mode', 'i2v', '--image', files['small.png']], r'small.png: the image is 16x12 pixels; this model makes'),
      (['--mode', 'cinemagraph', '--image', files['in.png'], '--mask', files['grey.png']], 'grey.png: not a binary'),
      (['--mode', 'inpaint', '--video', files['in.mp4']], 'mode inpaint takes --video and --mask; --mask is missing'),
  ]:
    with pytest.raises(app.UsageError, match=message):
      lumiere_sample('--workdir', workdir, *inputs, '--out', str(tmp / 'never.mp4'))
  assert not (tmp / 'never.mp4').exists()
