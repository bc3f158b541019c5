"""The rules of an evaluation config (configs/eval_ucf101.py) and of a run's in-training FVD (`config.eval`)."""

import pathlib

from lumiere_jax import config as config_lib
from lumiere_jax import stages
from lumiere_jax.eval import i3d, zero_shot


def validate(eval_config) -> None:
  """Raises ConfigError listing every invalid field of an evaluation config."""
  c = eval_config
  checks = [
      ('num_videos', c.num_videos >= 2, 'must be >= 2 (a covariance needs two videos)'),
      ('frames', c.frames >= i3d.MIN_FRAMES, f'must be >= {i3d.MIN_FRAMES} (I3D pools time by 8, then by 2)'),
      ('real_set', c.real_set in zero_shot.REAL_SETS, f'must be one of {tuple(zero_shot.REAL_SETS)}'),
      ('real_fps', c.real_fps > 0, 'must be > 0'),
      ('chunk_size', c.chunk_size >= 1, 'must be >= 1'),
      ('is_splits', c.is_splits >= 1, 'must be >= 1'),
      ('prompts', pathlib.Path(c.prompts).is_file(), 'is not a file'),
      ('sample_steps', c.sample_steps is None or c.sample_steps >= 1, 'must be >= 1 (unset: the run\'s)'),
      ('guidance', c.guidance is None or c.guidance >= 0, 'must be >= 0 (unset: the run\'s)'),
  ]
  error = config_lib.ConfigError.from_errors(
      'invalid evaluation config', ((field, f'{c[field]!r} {problem}') for field, ok, problem in checks if not ok))
  if error:
    raise error


def training_fvd_errors(config):
  """(field, problem) for the in-training FVD: a text-to-video stage, clips I3D can read, a UCF101 copy."""
  e = config.eval
  if e.fvd_every_steps < 0:
    yield 'eval.fvd_every_steps', f'{e.fvd_every_steps} must be >= 0 (0: never)'
  if e.fvd_every_steps <= 0:
    return
  if e.fvd_num_videos < 2:
    yield 'eval.fvd_num_videos', f'{e.fvd_num_videos} must be >= 2 (a covariance needs two videos)'
  if not stages.of(config).text_to_video:
    yield 'eval.fvd_every_steps', f'stage {config.stage} does not generate videos from text alone'
  if config.model.num_frames < i3d.MIN_FRAMES:
    yield 'eval.fvd_every_steps', f'model.num_frames={config.model.num_frames}: I3D needs >= {i3d.MIN_FRAMES} frames'
  if not (pathlib.Path(e.fvd_ucf101_dir) / 'ucfTrainTestlist' / 'classInd.txt').is_file():
    yield 'eval.fvd_ucf101_dir', f'{e.fvd_ucf101_dir!r} is not a UCF101 root (no ucfTrainTestlist/classInd.txt)'
