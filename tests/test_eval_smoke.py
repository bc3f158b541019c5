"""The evaluation smoke path of the README: `lumiere-data fake-ucf101` writes a fake UCF101 root, and `lumiere-eval
--config configs/eval_ucf101.py:size=tiny` on a 16-frame tiny-size run prints an FVD with the real I3D. The tools run
in this process (as in test_cli_errors.py); the run is saved untrained, since the path, not the score, is tested."""

import json
import pathlib
import sys

from absl import flags
import jax
import numpy as np
import pytest

from lumiere_jax import config as config_lib
from lumiere_jax.eval import fake_ucf101, i3d, ucf101
from cli_runs import save_untrained
from test_cli_errors import CONFIGS, _tool


def _run_tool(name, monkeypatch, capsys, *args) -> str:
  """Runs `lumiere-<name> args` to a successful exit; returns its stdout."""
  with _tool(name) as tool:
    monkeypatch.setattr(sys, 'argv', [f'lumiere-{name}', *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
      tool.run()
    for flag in [flag for flag in flags.FLAGS if flag.startswith('config.')]:
      delattr(flags.FLAGS, flag)  # --config.* overrides are defined per parse
  output = capsys.readouterr()
  assert not exit_.value.code, output.err[-3000:]
  return output.out


def test_the_tiny_preset_fits_a_16_frame_tiny_run():
  tiny = config_lib.load('size=tiny', path=config_lib.EVAL_CONFIG_FILE)
  assert (tiny.num_videos, tiny.chunk_size, tiny.sample_steps, tiny.frames) == (8, 8, 10, 16)
  assert tiny.frames >= i3d.MIN_FRAMES
  assert config_lib.load('n=4,size=tiny', path=config_lib.EVAL_CONFIG_FILE).num_videos == 4
  assert config_lib.load(path=config_lib.EVAL_CONFIG_FILE).num_videos == 10235
  with pytest.raises(ValueError, match='size'):
    config_lib.load('size=huge', path=config_lib.EVAL_CONFIG_FILE)


def test_fake_ucf101_has_the_official_layout(tmp_path):
  root = fake_ucf101.write_fake_ucf101(tmp_path, num_classes=3, clips_per_class=3, num_frames=16, size=16)
  assert ucf101.read_classes(root) == list(fake_ucf101.CLASSES[:3])
  train, test = ucf101.read_split(root, 1, 'train'), ucf101.read_split(root, 1, 'test')
  assert [clip.label for clip in test] == [0, 1, 2] and len(train) == 6
  frames = ucf101.load_clip(train[0], 16)
  assert frames.shape == (16, 16, 16, 3) and frames.max() > 100  # a bright shape on the dark background
  with pytest.raises(ValueError, match='clips_per_class=1'):
    fake_ucf101.write_fake_ucf101(tmp_path / 'bad', clips_per_class=1)


def test_fvd_prints_at_tiny_size_on_a_fake_ucf101(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('LUMIERE_CACHE_DIR', str(tmp_path / 'cache'))
  root = tmp_path / 'ucf101'
  out = _run_tool('data', monkeypatch, capsys, 'fake-ucf101', '--out', root, '--classes', 2)
  assert f'to {root}' in out and len(ucf101.read_split(root, 1, 'train')) == 4
  run = save_untrained(tmp_path / 'base16', 'base', **{'model.num_frames': 16})
  report_path = tmp_path / 'eval' / 'report.json'
  # Cheaper than the preset, same path: I3D's cost is per clip and frame, and a batch is padded to the device count.
  monkeypatch.setattr(jax, 'local_devices', lambda: jax.devices()[:1])
  out = _run_tool('eval', monkeypatch, capsys, '--config', f'{CONFIGS}/eval_ucf101.py:size=tiny,n=4',
                  f'--config.frames={i3d.MIN_FRAMES}', '--config.sample_steps=2',
                  f'--config.reference_dir={tmp_path / "reference"}', '--workdir', run, '--ucf101', root,
                  '--out', report_path)
  report = json.loads(report_path.read_text())
  assert np.isfinite(report['fvd']) and report['fvd'] > 0 and f'FVD {report["fvd"]:.2f}' in out
  assert report['generated']['count'] == 4 and report['generated']['frames'] == i3d.MIN_FRAMES
  assert report['real']['count'] == 4 and pathlib.Path(report['model']['source']) == pathlib.Path(run).resolve()
