"""UCF101 zero-shot evaluation (Lumiere Table 1): `lumiere-eval --config configs/eval_ucf101.py:n=2048,real=all`.

Arguments (comma-separated `key=value`):
  n:    videos to generate (default 10235, the Lumiere protocol; FVD is biased by N, so compare equal N only).
  real: train | all   the real clips whose statistics FVD compares against, and whose class frequencies the prompts
        follow: `train` = split 1's train list (9,537 clips), `all` = every clip (13,320). Papers differ (and
        rarely say); the report records which was used.

Fields can then be overridden with `--config.chunk_size=32`; `lumiere_jax.config.validate_eval` checks them.
"""

import pathlib

import ml_collections
from ml_collections import config_dict

DEFAULTS = {'n': '10235', 'real': 'train'}


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  args = dict(DEFAULTS)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in DEFAULTS:
      raise ValueError(f'config argument {item!r}: expected n=<videos> or real=<train|all>, comma-separated')
    args[key] = value
  c = ml_collections.ConfigDict()
  c.num_videos = int(args['n'])
  c.real_set = args['real']
  c.frames = 16  # the first 16 frames of every generated and real video
  c.real_fps = 25.0  # UCF101's frame rate, recorded with the statistics; real clips are not resampled
  c.prompts = str(pathlib.Path(__file__).resolve().parent / 'ucf101_prompts.json')  # {class name: prompt}, ours
  c.seed = 0  # shuffles the video order; chunk c is sampled with seed + c
  c.chunk_size = 16  # videos per generate call and per saved chunk; a multiple of each process's device count
  c.is_splits = 10  # Inception Score splits (TGANv2 convention)
  c.reference_dir = ''  # cache of the real statistics; '' = $LUMIERE_DATA_DIR or ~/.cache/lumiere_jax
  # Sampling settings; unset = the run's config.sample.
  c.sample_steps = config_dict.placeholder(int)
  c.guidance = config_dict.placeholder(float)
  c.lock()
  return c
