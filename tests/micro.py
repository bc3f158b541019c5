"""The smallest configs the tests train: 16x16 frames, two levels, tiny widths, a 16-clip synthetic set."""

from lumiere_jax import config as config_lib


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
  for path, value in overrides.items():
    section, name = path.split('.')
    config[section][name] = value
  config.lock()
  return config
