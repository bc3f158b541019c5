"""`lumiere-train` and `lumiere-sample` from the command line, and SIGTERM -> committed checkpoint + exit 0."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from lumiere_jax.data import video
from lumiere_jax.train import checkpoint

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The micro shapes of tests/micro.py, as command-line overrides.
MICRO = ['--config.model.image_size=16', '--config.model.num_frames=8', '--config.model.channels=16',
         '--config.model.attention_resolutions=(4,)', '--config.model.num_heads=2', '--config.model.norm_groups=4',
         '--config.text.width=32', '--config.text.depth=1', '--config.text.max_length=16',
         '--config.data.synthetic_clips=16', '--config.train.batch_size=4', '--config.train.warmup_steps=1',
         '--config.sample.steps=2', '--config.model.init_from=none']


def _env(data_dir):
  env = dict(os.environ, LUMIERE_DATA_DIR=str(data_dir), PYTHONUNBUFFERED='1',
             JAX_COMPILATION_CACHE_DIR=str(ROOT / '.cache' / 'jax'), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1')
  # One CPU device (not the session's 8); the session's other XLA flags (conftest.py) stay.
  env['XLA_FLAGS'] = ' '.join(f for f in env.get('XLA_FLAGS', '').split() if 'device_count' not in f)
  return env


def _train_command(workdir, *extra):
  return [sys.executable, '-m', 'lumiere_jax.cli.train', '--config', 'configs/lumiere.py:stage=base,size=tiny',
          '--workdir', str(workdir), *MICRO, *extra]


def test_train_then_sample_writes_a_decodable_clip(tmp_path):
  train = subprocess.run(_train_command(tmp_path / 'run', '--config.train.steps=2'), cwd=ROOT,
                         env=_env(tmp_path / 'data'), capture_output=True, text=True, timeout=600)
  assert train.returncode == 0, train.stderr[-3000:]
  assert 'GFLOPs per device as compiled' in train.stdout and 'loss=' in train.stdout
  assert checkpoint.resolve(tmp_path / 'run')[1] == 2
  assert list((tmp_path / 'run' / 'tensorboard').glob('events.out.tfevents.*'))

  out = tmp_path / 'clip.mp4'
  sample = subprocess.run(
      [sys.executable, '-m', 'lumiere_jax.cli.sample', '--workdir', str(tmp_path / 'run'),
       '--prompt', 'a red circle moving left', '--out', str(out), '--steps', '2', '--seed', '3'],
      cwd=ROOT, env=_env(tmp_path / 'data'), capture_output=True, text=True, timeout=600)
  assert sample.returncode == 0, sample.stderr[-3000:]
  frames, fps = video.decode_video(out.read_bytes())
  assert frames.shape == (8, 16, 16, 3)
  assert fps == pytest.approx(16)


def test_sigterm_saves_and_exits_zero(tmp_path):
  process = subprocess.Popen(
      _train_command(tmp_path / 'run', '--config.train.steps=1000', '--config.train.log_every=1',
                     '--config.train.checkpoint_every=1000'),
      cwd=ROOT, env=_env(tmp_path / 'data'), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.monotonic() + 500
  for line in process.stdout:  # wait until the loop runs (the handler is installed by then)
    if 'loss=' in line or time.monotonic() > deadline:
      break
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=300)
  assert process.returncode == 0, output[-3000:]
  assert 'SIGTERM: saved step' in output
  step = checkpoint.resolve(tmp_path / 'run')[1]
  assert 1 <= step < 1000
