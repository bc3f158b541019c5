"""The rules of the `diffusion` and `sample` config sections."""

from lumiere_jax.diffusion.parameterization import PREDICTIONS, VARIANCES
from lumiere_jax.diffusion.samplers import SAMPLERS
from lumiere_jax.diffusion.schedules import SCHEDULES, SPACINGS


def config_errors(config):
  """(field, problem) for every out-of-range `diffusion` or `sample` field."""
  d, s = config.diffusion, config.sample
  discrete = d.schedule == 'squaredcos_cap_v2'
  threshold_max = s.dynamic_threshold_max
  checks = [
      ('diffusion.logsnr_max', d.logsnr_max > d.logsnr_min, f'must exceed diffusion.logsnr_min={d.logsnr_min}'),
      ('diffusion.text_dropout', 0 <= d.text_dropout <= 1, 'must be in [0, 1]'),
      ('diffusion.schedule', d.schedule in SCHEDULES, f'must be one of {SCHEDULES}'),
      ('diffusion.num_timesteps', d.num_timesteps >= 2, 'must be >= 2'),
      ('diffusion.parameterization', d.parameterization in PREDICTIONS, f'must be one of {PREDICTIONS}'),
      ('diffusion.variance', d.variance in VARIANCES, f'must be one of {VARIANCES}'),
      ('diffusion.variance', d.variance != 'learned_range' or discrete,
       "needs diffusion.schedule='squaredcos_cap_v2'"),
      ('diffusion.vlb_weight', d.vlb_weight >= 0, 'must be >= 0'),
      ('sample.sampler', s.sampler in SAMPLERS, f'must be one of {SAMPLERS}'),
      ('sample.sampler', s.sampler != 'ddpm' or discrete, "needs diffusion.schedule='squaredcos_cap_v2'"),
      ('sample.steps', s.steps >= 1, 'must be >= 1'),
      ('sample.steps', not discrete or s.steps <= d.num_timesteps,
       f'must not exceed diffusion.num_timesteps={d.num_timesteps}'),
      ('sample.eta', 0 <= s.eta <= 1, 'must be in [0, 1]'),
      ('sample.guidance', s.guidance >= 0, 'must be >= 0'),
      ('sample.dynamic_threshold', 0 <= s.dynamic_threshold < 1, 'must be in [0, 1)'),
      ('sample.dynamic_threshold_max', threshold_max is None or threshold_max >= 1, 'must be None or >= 1'),
      ('sample.timestep_spacing', s.timestep_spacing in SPACINGS, f'must be one of {SPACINGS}'),
      ('sample.fps', s.fps > 0, 'must be > 0'),
  ]
  for field, ok, problem in checks:
    if not ok:
      section, name = field.split('.')
      yield field, f'{config[section].get(name)!r} {problem}'
