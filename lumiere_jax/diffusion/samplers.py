"""DDIM, ancestral and DDPM samplers for VP diffusion, for any schedule and parameterization.

'ddim' and 'ancestral' walk a uniform time grid t_i = t_start (1 - i / steps) to data (t = 0), from pure noise
(t_start = 1) or, for SDEdit, from a noised input (t_start = the edit strength); on a discrete schedule each t is its
timestep (`schedules.DiscreteSchedule.timestep`: 999, 899, ... for 10 steps of 1000). 'ddpm' walks diffusers'
DDPMScheduler timesteps (`DiscreteSchedule.inference_timesteps`, IF's 'leading' spacing: 900, 800, ..., 0) and takes
the ancestral step: with a learned-range variance and a capped dynamic threshold it is DeepFloyd IF's sampler.
Each step predicts x0 (`parameterization.Parameterization.x0`), clips or thresholds it, recomputes eps from the
limited x0, and moves z from time t to s < t. With r = 1 - SNR_t / SNR_s = sigma_ts**2 / sigma_t**2 (computed as
-expm1 of the log-SNR gap, exact for small steps):
  ddim:      z_s = alpha_s x0 + sqrt(sigma_s**2 - c**2) eps + c noise, c = eta sigma_s sqrt(r)
             (DDIM's sigma, eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s), in VP form; eta = 0 is the
             deterministic DDIM, eta = 1 equals the ancestral step);
  ancestral: z_s ~ q(z_s | z_t, x0) = N(alpha_ts sigma_s**2/sigma_t**2 z_t + alpha_s r x0, r sigma_s**2),
             alpha_ts = alpha_t / alpha_s, the exact posterior of the forward process; with a learned-range variance
             the log variance is frac log(r sigma_t**2) + (1 - frac) log(r sigma_s**2), frac = (values + 1) / 2
             (r sigma_t**2 = 1 - abar_t / abar_s is the step's beta), as diffusers' DDPMScheduler.
`stepper` gives one step at a time (a caller reports progress between jitted calls), `sample` the whole walk in one
loop. The last step returns the x0 estimate ('ddpm': the step's sample, as diffusers; it is x0 when the last timestep
is 0, as with 'leading' spacing, and noisy otherwise). Jit the caller: everything but the arrays is static.
"""

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import parameterization as parameterizations
from lumiere_jax.diffusion import schedules

SAMPLERS = ('ddim', 'ancestral', 'ddpm')


def _check_args(sampler, steps, eta, rng, dynamic_threshold, dynamic_threshold_max=None):
  """Rejects bad settings, naming the `config.sample` field they come from."""
  if sampler not in SAMPLERS:
    raise ValueError(f'sample.sampler must be one of {SAMPLERS}, got {sampler!r}')
  if steps < 1:
    raise ValueError(f'sample.steps must be >= 1, got {steps}')
  if not 0.0 <= eta <= 1.0:
    raise ValueError(f'sample.eta must be in [0, 1], got {eta}')
  if not 0.0 <= dynamic_threshold < 1.0:
    raise ValueError(f'sample.dynamic_threshold must be in [0, 1) (0 = plain clip), got {dynamic_threshold}')
  if dynamic_threshold_max is not None and dynamic_threshold_max < 1.0:
    raise ValueError(f'sample.dynamic_threshold_max must be >= 1 (or None: uncapped), got {dynamic_threshold_max}')
  if rng is None and (sampler != 'ddim' or eta > 0):
    raise ValueError(f'rng is required by sample.sampler={sampler!r} with sample.eta={eta}')


def _ddim_step(z, x0, eps, logsnr_t, logsnr_s, eta, noise):
  """z_t -> z_s by DDIM; `noise` is None when eta = 0."""
  alpha_s, sigma_s = schedules.alpha_sigma(losses.broadcast_batch(logsnr_s, z))
  r = -jnp.expm1(losses.broadcast_batch(logsnr_t - logsnr_s, z))
  z_s = alpha_s * x0 + sigma_s * jnp.sqrt(1.0 - eta**2 * r) * eps
  return z_s if noise is None else z_s + eta * sigma_s * jnp.sqrt(r) * noise


def learned_range_log_variance(variance_values, logsnr_t, logsnr_s):
  """log variance of a step t -> s from learned-range values in [-1, 1] (-1: the posterior's, +1: the step's beta).

  The posterior variance is floored at 1e-20 (it is 0 on the step to clean data, which adds no noise), as diffusers.
  """
  log_r = jnp.log(-jnp.expm1(logsnr_t - logsnr_s))
  min_log = jnp.maximum(log_r + jax.nn.log_sigmoid(-logsnr_s), np.log(1e-20))
  max_log = log_r + jax.nn.log_sigmoid(-logsnr_t)
  frac = (variance_values + 1.0) / 2.0
  return frac * losses.broadcast_batch(max_log, variance_values) + (1.0 - frac) * losses.broadcast_batch(
      min_log, variance_values)


def _ancestral_step(z, x0, logsnr_t, logsnr_s, noise, variance_values=None):
  """z_t -> z_s drawn from the forward-process posterior given the x0 estimate (or the learned variance)."""
  alpha_t, sigma_t = schedules.alpha_sigma(losses.broadcast_batch(logsnr_t, z))
  alpha_s, sigma_s = schedules.alpha_sigma(losses.broadcast_batch(logsnr_s, z))
  r = -jnp.expm1(losses.broadcast_batch(logsnr_t - logsnr_s, z))
  mean = (alpha_t / alpha_s) * (sigma_s / sigma_t) ** 2 * z + alpha_s * r * x0
  if variance_values is None:
    return mean + sigma_s * jnp.sqrt(r) * noise
  return mean + jnp.exp(0.5 * learned_range_log_variance(variance_values, logsnr_t, logsnr_s)) * noise


def _uniform_grid(schedule, steps, t_start):
  """(step i, batch) -> (model input at t, log-SNR at t, log-SNR at s), each (batch,); t = t_start (1 - i / steps)."""
  def levels(i, batch):
    t, s = t_start * (1.0 - i / steps), t_start * (1.0 - (i + 1) / steps)
    return (jnp.full((batch,), schedule.model_input(t), schedule.model_input_dtype),
            jnp.full((batch,), schedule.logsnr(t), jnp.float32), jnp.full((batch,), schedule.logsnr(s), jnp.float32))
  return levels


def _ddpm_grid(schedule, steps, spacing):
  """(step i, batch) -> (timestep, its log-SNR, the previous timestep's) on diffusers' DDPMScheduler timesteps."""
  if not isinstance(schedule, schedules.DiscreteSchedule):
    raise ValueError(f'sample.sampler=\'ddpm\' needs a discrete schedule (diffusion.schedule=\'squaredcos_cap_v2\'), '
                     f'got diffusion.schedule={schedule.kind!r}')
  timesteps, previous = (jnp.asarray(a, jnp.int32) for a in schedule.inference_timesteps(steps, spacing))

  def levels(i, batch):
    t, s = timesteps[i], previous[i]
    return (jnp.full((batch,), t, jnp.int32), jnp.full((batch,), schedule.logsnr_at(t), jnp.float32),
            jnp.full((batch,), schedule.logsnr_at(s), jnp.float32))
  return levels


def stepper(denoise_fn, *, schedule, steps, sampler='ddim', eta=0.0, rng=None, dynamic_threshold=0.0, t_start=1.0,
            parameterization=None, dynamic_threshold_max=None, spacing='leading'):
  """`step(i, z) -> z'`: step i (an int or a traced int32) of the walk `sample` takes; the last returns x0.

  Taking the steps one by one (a jitted `step` called with each index) gives `sample`'s walk while the caller reports
  progress between them. Args as `sample`'s; raises ValueError for bad settings before anything is traced.
  """
  _check_args(sampler, steps, eta, rng, dynamic_threshold, dynamic_threshold_max)
  if not 0.0 < t_start <= 1.0:
    raise ValueError(f't_start must be in (0, 1], got {t_start}')
  parameterization = parameterization or parameterizations.V
  parameterization.check_schedule(schedule)
  stochastic = sampler != 'ddim' or eta > 0
  if sampler == 'ddpm':
    if t_start != 1.0:
      raise ValueError(f'sample.sampler=\'ddpm\' starts from noise only (t_start=1), got t_start={t_start}')
    levels = _ddpm_grid(schedule, steps, spacing)
  else:
    levels = _uniform_grid(schedule, steps, t_start)

  def step(i, z):
    level_t, logsnr_t, logsnr_s = levels(i, z.shape[0])
    prediction, variance_values = parameterization.split(denoise_fn(z, level_t).astype(jnp.float32), z)
    x0 = parameterization.x0(z, prediction, logsnr_t)
    x0 = (guidance.dynamic_threshold(x0, dynamic_threshold, dynamic_threshold_max) if dynamic_threshold
          else jnp.clip(x0, -1.0, 1.0))
    step_noise = jax.random.normal(jax.random.fold_in(rng, i), z.shape, z.dtype) if stochastic else None
    if sampler == 'ddpm':  # as DDPMScheduler.step: no noise at timestep 0, and the last step's sample is returned
      return _ancestral_step(z, x0, logsnr_t, logsnr_s, step_noise * (level_t[0] > 0), variance_values)
    if sampler == 'ddim':
      z_s = _ddim_step(z, x0, losses.eps_from_x0(z, x0, logsnr_t), logsnr_t, logsnr_s, eta, step_noise)
    else:
      z_s = _ancestral_step(z, x0, logsnr_t, logsnr_s, step_noise, variance_values)
    return jnp.where(i == steps - 1, x0, z_s)

  return step


def sample(denoise_fn, noise, *, schedule, steps, **kwargs):
  """Denoises `noise` (B, ...) into data in `steps` steps; float32 throughout.

  Args:
    denoise_fn: (z (B, ...), level (B,)) -> model output, e.g. from `guidance.classifier_free_guidance`; the level is
      `schedule.model_input` (the log-SNR, or a discrete schedule's int32 timestep).
    noise: the sample at t = t_start: standard normal for t_start = 1, a noised input for SDEdit.
    schedule: a `schedules.Schedule` or `schedules.DiscreteSchedule` ('ddpm' needs the latter).
    steps: number of model calls (`sample.steps`).
    **kwargs: the walk's settings, each with its default in `stepper`:
      sampler: 'ddim', 'ancestral' or 'ddpm' (`sample.sampler`).
      eta: DDIM stochasticity in [0, 1] (`sample.eta`); ignored by the others.
      rng: PRNG key for the step noise (step i uses fold_in(rng, i)); required when the sampler is stochastic.
      dynamic_threshold: percentile in (0, 1) for `guidance.dynamic_threshold`; 0 clips x0 to [-1, 1]
        (`sample.dynamic_threshold`).
      t_start: where the walk starts, in (0, 1]; the grid is t_start * (1 - i / steps) (SDEdit's strength); 'ddpm'
        starts at its first timestep only (t_start = 1).
      parameterization: the model's `parameterization.Parameterization`; None is v-prediction with fixed variance. A
        learned variance sets the step variance of 'ancestral' and 'ddpm'; 'ddim' ignores it.
      dynamic_threshold_max: cap of the threshold (`sample.dynamic_threshold_max`; IF stage I: 1.5); None: uncapped.
      spacing: 'ddpm' timestep spacing, one of `schedules.SPACINGS` (`sample.timestep_spacing`; IF: 'leading').

  Returns:
    The x0 estimate of the last step, (B, ...).
  """
  step = stepper(denoise_fn, schedule=schedule, steps=steps, **kwargs)
  return jax.lax.fori_loop(0, steps, step, jnp.asarray(noise, jnp.float32))
