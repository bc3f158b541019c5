"""UCF101 zero-shot evaluation (Lumiere Table 1): `lumiere-eval --config configs/eval_ucf101.py:n=2048,real=all`.

Arguments (comma-separated `key=value`):
  n:    videos to generate (default 10235, the Lumiere protocol; tiny: 8; FVD is biased by N, so compare equal N
        only).
  real: train | all   the real clips whose statistics FVD compares against, and whose class frequencies the prompts
        follow: `train` = split 1's train list (9,537 clips), `all` = every clip (13,320). Papers differ (and
        rarely say); the report records which was used.
  size: full | tiny   `tiny` is the smoke preset (n defaults to 8, chunks of 8, 10 sampling steps): with a fake
        UCF101 folder (`lumiere-data fake-ucf101 --out DIR`) and a tiny base run of 16 frames
        (`--config.model.num_frames=16`; I3D reads >= 9 frames, tiny runs make 8 by default), FVD prints in minutes
        on a CPU. Its numbers only show that the path works.

Fields can then be overridden with `--config.chunk_size=32`; `lumiere_jax/eval/checks.py: validate` checks them.
"""

import pathlib

import ml_collections
from ml_collections import config_dict

from lumiere_jax import config as config_lib

DEFAULTS = {'n': '', 'real': 'train', 'size': 'full'}
NUM_VIDEOS = {'full': 10235, 'tiny': 8}


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, DEFAULTS, choices={'size': tuple(NUM_VIDEOS)})
  tiny = args['size'] == 'tiny'
  c = ml_collections.ConfigDict()
  c.num_videos = int(args['n'] or NUM_VIDEOS[args['size']])
  c.real_set = args['real']
  c.frames = 16  # the first 16 frames of every generated and real video
  c.real_fps = 25.0  # UCF101's frame rate, recorded with the statistics; real clips are not resampled
  c.prompts = str(pathlib.Path(__file__).resolve().parent / 'ucf101_prompts.json')  # {class name: prompt}, ours
  c.seed = 0  # shuffles the video order; chunk c is sampled with seed + c
  # Videos per generate call and per saved chunk; padded to a multiple of each process's device count (a multiple
  # wastes none).
  c.chunk_size = 8 if tiny else 16
  c.is_splits = 2 if tiny else 10  # Inception Score splits (TGANv2 convention)
  c.reference_dir = ''  # cache of the real statistics; '' = $LUMIERE_DATA_DIR or ~/.cache/lumiere_jax
  # Sampling settings; unset = the run's config.sample.
  c.sample_steps = 10 if tiny else config_dict.placeholder(int)
  c.guidance = config_dict.placeholder(float)
  c.lock()
  return c
