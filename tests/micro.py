"""The smallest configs the tests train: 16x16 frames, two levels, tiny widths, a 16-clip synthetic set."""

import jax
from flax import nnx

from lumiere_jax import config as config_lib
from lumiere_jax import models, stages
from lumiere_jax.models import params as params_lib
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.train import state as state_lib


def micro_config(stage='base', data_dir=None, **overrides):
  """`configs/lumiere.py` at size tiny, shrunk further; `overrides` are dotted paths, e.g. {'train.steps': 4}."""
  config = config_lib.load(f'stage={stage},size=tiny')
  config.unlock()
  config.model.update(dict(image_size=16, num_frames=8, channels=16, channel_mults=(1, 2, 2),
                           attention_resolutions=(4,), num_heads=2, norm_groups=4,
                           temporal_downsample=(True, True)))
  config.text.update(dict(width=32, depth=1, num_heads=2, max_length=16))
  config.data.update(dict(synthetic_clips=16))
  if data_dir is not None:
    config.data.synthetic_dir = str(data_dir)
  config.train.update(dict(batch_size=4, steps=4, warmup_steps=1, log_every=2, checkpoint_every=2))
  config.sample.update(dict(steps=2, every_steps=0, prompts=('a red circle moving right',)))
  config.mesh.data = 1
  if stages.STAGES[stage].init_from:
    config.model.init_from = stages.RANDOM_INIT  # tests train on random frozen weights unless they say otherwise
  for path, value in overrides.items():
    section, name = path.split('.')
    config[section][name] = value
  config.lock()
  return config


def one_device_setup(config) -> state_lib.TrainSetup:
  return state_lib.TrainSetup.create(config, mesh_lib.make_mesh(config.mesh, jax.devices()[:1]))


def perturbed(params: dict, scale: float, seed: int) -> dict:
  """Every parameter plus noise: zero-initialised layers would otherwise hide what they are fed."""
  keys = jax.random.split(jax.random.PRNGKey(seed), len(params))
  return {k: p + scale * jax.random.normal(key, p.shape) for (k, p), key in zip(sorted(params.items()), keys)}


def trained_looking_params(config) -> dict:
  """The initial flat parameters of `config`'s model, perturbed: a stand-in for a trained checkpoint."""
  return perturbed(params_lib.flat_params(models.build_model(config, rngs=nnx.Rngs(0))), 0.1, seed=1)


def initialised_from(config, pretrained: dict) -> tuple[state_lib.TrainSetup, dict]:
  """(setup, inference params) of `config`'s model on one device, initialised from `pretrained` (`model.init_from`)."""
  setup = one_device_setup(config)
  return setup, state_lib.inference_params(setup.init(pretrained))
