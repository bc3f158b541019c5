"""`lumiere-sample --workdir DIR --prompt "..." --out clip.mp4`: sample a trained run's EMA parameters."""

import pathlib

from absl import app, flags

from lumiere_jax import config as config_lib
from lumiere_jax import sample as sample_lib
from lumiere_jax.data import video
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.train import checkpoint, state as state_lib

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (latest checkpoint) or a checkpoints/<step> dir.')
_PROMPTS = flags.DEFINE_multi_string('prompt', None, 'Caption; repeat the flag for several clips.')
_OUT = flags.DEFINE_string('out', 'sample.mp4', 'Output MP4; with several prompts, <stem>-<i>.mp4 beside it.')
_STEPS = flags.DEFINE_integer('steps', None, 'Sampling steps (default: the run\'s config.sample.steps).')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'Classifier-free guidance scale (default: config.sample.guidance).')
_SAMPLER = flags.DEFINE_enum('sampler', None, ['ddim', 'ancestral'], 'Sampler (default: config.sample.sampler).')
_ETA = flags.DEFINE_float('eta', None, 'DDIM eta (default: config.sample.eta).')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_RAW = flags.DEFINE_bool('raw', False, 'Use the raw trainable parameters instead of their EMA.')


def main(argv):
  del argv
  if not _PROMPTS.value:
    raise app.UsageError('give at least one --prompt')
  workdir, step = checkpoint.resolve(_WORKDIR.value)
  config = checkpoint.Checkpointer(workdir, async_save=False).restore_config(step)
  config.unlock()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1  # sampling: params replicated, batch split
  for field, flag in (('steps', _STEPS), ('guidance', _GUIDANCE), ('sampler', _SAMPLER), ('eta', _ETA)):
    if flag.value is not None:
      config.sample[field] = flag.value
  config.lock()
  config_lib.validate(config)
  mesh = mesh_lib.make_mesh(config.mesh)
  config, step, params = checkpoint.load_inference_params(checkpoint.checkpoint_dir(workdir) / str(step), mesh,
                                                          use_ema=not _RAW.value)
  spec = state_lib.TrainSetup.create(config, mesh).spec
  videos = sample_lib.generate(spec, params, config, _PROMPTS.value, seed=_SEED.value)
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  paths = [out] if len(videos) == 1 else [out.with_name(f'{out.stem}-{i}{out.suffix}') for i in range(len(videos))]
  for path, clip in zip(paths, videos):
    video.write_mp4(path, clip, config.sample.fps)
    print(f'wrote {path} ({clip.shape[0]} frames, {clip.shape[2]}x{clip.shape[1]}, step {step})')


def run():
  app.run(main)


if __name__ == '__main__':
  run()
