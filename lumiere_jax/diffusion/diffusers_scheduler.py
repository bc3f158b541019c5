"""Our diffusion and sampling settings from a diffusers DDPMScheduler config (a pipeline's
`scheduler/scheduler_config.json`, e.g. DeepFloyd IF's), so a converted model samples as its pipeline does.

IF stage I's config (learned_range, squaredcos_cap_v2, epsilon, thresholding 0.95 capped at 1.5, 'leading') maps to
diffusion.schedule='squaredcos_cap_v2', parameterization='eps', variance='learned_range', sample.sampler='ddpm',
dynamic_threshold=0.95, dynamic_threshold_max=1.5, timestep_spacing='leading'. Options our samplers do not implement
are refused by name.
"""

from collections.abc import Mapping

from lumiere_jax.diffusion.schedules import SPACINGS

_PREDICTIONS = {'epsilon': 'eps', 'v_prediction': 'v'}
_VARIANCES = {'learned_range': 'learned_range', 'fixed_small': 'fixed'}


def settings(scheduler_config: Mapping) -> dict[str, object]:
  """{'section.field': value} for `config.diffusion` and `config.sample` from a DDPMScheduler config dict."""
  get = lambda key, default: scheduler_config.get(key, default)  # noqa: E731  (diffusers' defaults)
  unsupported = [
      ('_class_name', get('_class_name', 'DDPMScheduler') == 'DDPMScheduler', 'DDPMScheduler'),
      ('beta_schedule', get('beta_schedule', 'linear') == 'squaredcos_cap_v2', 'squaredcos_cap_v2'),
      ('trained_betas', get('trained_betas', None) is None, 'None'),
      ('prediction_type', get('prediction_type', 'epsilon') in _PREDICTIONS, f'one of {tuple(_PREDICTIONS)}'),
      ('variance_type', get('variance_type', 'fixed_small') in _VARIANCES, f'one of {tuple(_VARIANCES)}'),
      ('timestep_spacing', get('timestep_spacing', 'leading') in SPACINGS, f'one of {SPACINGS}'),
      ('steps_offset', get('steps_offset', 0) == 0, '0'),
      ('rescale_betas_zero_snr', not get('rescale_betas_zero_snr', False), 'False'),
      ('clip_sample', get('thresholding', False) or get('clip_sample', True), 'True without thresholding'),
      ('clip_sample_range', get('thresholding', False) or get('clip_sample_range', 1.0) == 1.0, '1.0'),
  ]
  problems = [f'{key}={scheduler_config.get(key)!r} (supported: {wanted})' for key, ok, wanted in unsupported if not ok]
  if problems:
    raise ValueError(f'unsupported diffusers scheduler config: {"; ".join(problems)}')
  thresholding = get('thresholding', False)
  return {
      'diffusion.schedule': 'squaredcos_cap_v2',
      'diffusion.num_timesteps': int(get('num_train_timesteps', 1000)),
      'diffusion.parameterization': _PREDICTIONS[get('prediction_type', 'epsilon')],
      'diffusion.variance': _VARIANCES[get('variance_type', 'fixed_small')],
      'sample.sampler': 'ddpm',
      'sample.timestep_spacing': get('timestep_spacing', 'leading'),
      'sample.dynamic_threshold': float(get('dynamic_thresholding_ratio', 0.995)) if thresholding else 0.0,
      'sample.dynamic_threshold_max': float(get('sample_max_value', 1.0)) if thresholding else None,
  }
