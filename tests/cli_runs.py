"""Helpers of the editing CLI tests: untrained micro runs on disk, input files, `lumiere-sample` in this process."""

import functools

import jax
import numpy as np
import pytest
from absl import flags
from PIL import Image

from lumiere_jax.cli import sample as sample_cli
from lumiere_jax.data import video
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.train import checkpoint, state as state_lib
from micro import micro_config

PROMPT = 'a red circle moving right'
# Batches of 8: the in-process sampler validates a run's saved config against the session's 8 CPU devices.
BATCH = 8


def save_untrained(workdir, stage, **overrides) -> str:
  """An untrained run of `stage` at micro size, saved as step 0 (enough to drive init and sampling)."""
  config = micro_config(stage, **{'train.batch_size': BATCH, **overrides})
  setup = state_lib.TrainSetup.create(config, mesh_lib.make_mesh(config.mesh, jax.devices()[:1]))
  saver = checkpoint.Checkpointer(workdir, async_save=False)
  saver.save(0, setup.init(), None, config)
  saver.close()
  return str(workdir)


def input_files(tmp) -> dict[str, str]:
  """16x16 inputs: in.png, region.png (a white square), grey.png (not binary), small.png (16x12), in.mp4 (8 frames)."""
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(tmp / 'in.png')
  region = np.zeros((16, 16), np.uint8)
  region[4:12, 4:12] = 255
  Image.fromarray(region).save(tmp / 'region.png')
  Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp / 'grey.png')
  Image.fromarray(rng.integers(0, 256, (12, 16, 3), np.uint8)).save(tmp / 'small.png')
  video.write_mp4(tmp / 'in.mp4', rng.integers(0, 256, (8, 16, 16, 3), np.uint8), 16)
  return {name: str(tmp / name) for name in ('in.png', 'region.png', 'grey.png', 'small.png', 'in.mp4')}


@pytest.fixture(scope='module')
def lumiere_sample():
  """Runs `lumiere-sample` in this process with the given flags. Loaded runs are cached: building the abstract model
  costs seconds per load, and every load of a run gives the same parameters."""
  def run(*args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['lumiere-sample', '--prompt', PROMPT, '--steps', '2', *args])
    sample_cli.main([])
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(sample_cli, '_load', functools.cache(sample_cli._load))
    patch.setattr(checkpoint, 'load_inference_params', functools.cache(checkpoint.load_inference_params))
    yield run
  flags.FLAGS.unparse_flags()
  flags.FLAGS.mark_as_parsed()


def assert_decodable_clip(path) -> None:
  frames, fps = video.decode_video(path.read_bytes())
  assert frames.shape == (8, 16, 16, 3) and fps == 16, path
