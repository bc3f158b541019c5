"""DDIM and ancestral samplers for continuous-time VP diffusion with a v-prediction model.

Both walk a uniform time grid t_i = t_start (1 - i / steps) to data (t = 0), from pure noise (t_start = 1) or, for
SDEdit, from a noised input (t_start = the edit strength). Each step predicts x0,
clips it, recomputes eps from the clipped x0, and moves z from time t to s < t. With
r = 1 - SNR_t / SNR_s = sigma_ts**2 / sigma_t**2 (computed as -expm1 of the log-SNR gap, exact for small steps):
  ddim:      z_s = alpha_s x0 + sqrt(sigma_s**2 - c**2) eps + c noise, c = eta sigma_s sqrt(r)
             (DDIM's sigma, eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s), in VP form; eta = 0 is the
             deterministic DDIM, eta = 1 equals the ancestral step);
  ancestral: z_s ~ q(z_s | z_t, x0) = N(alpha_ts sigma_s**2/sigma_t**2 z_t + alpha_s r x0, r sigma_s**2),
             alpha_ts = alpha_t / alpha_s, the exact posterior of the forward process.
The last step (s = 0) returns the x0 estimate. Jit the caller: everything but the arrays is static.
"""

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import schedules

SAMPLERS = ('ddim', 'ancestral')


def _check_args(sampler, steps, eta, rng, dynamic_threshold):
  """Rejects bad settings, naming the `config.sample` field they come from."""
  if sampler not in SAMPLERS:
    raise ValueError(f'sample.sampler must be one of {SAMPLERS}, got {sampler!r}')
  if steps < 1:
    raise ValueError(f'sample.steps must be >= 1, got {steps}')
  if not 0.0 <= eta <= 1.0:
    raise ValueError(f'sample.eta must be in [0, 1], got {eta}')
  if not 0.0 <= dynamic_threshold < 1.0:
    raise ValueError(f'sample.dynamic_threshold must be in [0, 1) (0 = plain clip), got {dynamic_threshold}')
  if rng is None and (sampler == 'ancestral' or eta > 0):
    raise ValueError(f'rng is required by sample.sampler={sampler!r} with sample.eta={eta}')


def _ddim_step(z, x0, eps, logsnr_t, logsnr_s, eta, noise):
  """z_t -> z_s by DDIM; `noise` is None when eta = 0."""
  alpha_s, sigma_s = schedules.alpha_sigma(losses.broadcast_batch(logsnr_s, z))
  r = -jnp.expm1(losses.broadcast_batch(logsnr_t - logsnr_s, z))
  z_s = alpha_s * x0 + sigma_s * jnp.sqrt(1.0 - eta**2 * r) * eps
  return z_s if noise is None else z_s + eta * sigma_s * jnp.sqrt(r) * noise


def _ancestral_step(z, x0, logsnr_t, logsnr_s, noise):
  """z_t -> z_s drawn from the forward-process posterior given the x0 estimate."""
  alpha_t, sigma_t = schedules.alpha_sigma(losses.broadcast_batch(logsnr_t, z))
  alpha_s, sigma_s = schedules.alpha_sigma(losses.broadcast_batch(logsnr_s, z))
  r = -jnp.expm1(losses.broadcast_batch(logsnr_t - logsnr_s, z))
  mean = (alpha_t / alpha_s) * (sigma_s / sigma_t) ** 2 * z + alpha_s * r * x0
  return mean + sigma_s * jnp.sqrt(r) * noise


def sample(denoise_fn, noise, *, schedule, steps, sampler='ddim', eta=0.0, rng=None, dynamic_threshold=0.0,
           t_start=1.0):
  """Denoises `noise` (B, ...) into data in `steps` steps; float32 throughout.

  Args:
    denoise_fn: (z (B, ...), logsnr (B,)) -> v, e.g. from `guidance.classifier_free_guidance`.
    noise: the sample at t = t_start: standard normal for t_start = 1, a noised input for SDEdit.
    schedule: a `schedules.Schedule`.
    steps: number of model calls (`sample.steps`).
    sampler: 'ddim' or 'ancestral' (`sample.sampler`).
    eta: DDIM stochasticity in [0, 1] (`sample.eta`); ignored by 'ancestral'.
    rng: PRNG key for the step noise (step i uses fold_in(rng, i)); required when the sampler is stochastic.
    dynamic_threshold: percentile in (0, 1) for `guidance.dynamic_threshold`; 0 clips x0 to [-1, 1]
      (`sample.dynamic_threshold`).
    t_start: where the walk starts, in (0, 1]; the grid is t_start * (1 - i / steps) (SDEdit's strength).

  Returns:
    The x0 estimate of the last step, (B, ...).
  """
  _check_args(sampler, steps, eta, rng, dynamic_threshold)
  if not 0.0 < t_start <= 1.0:
    raise ValueError(f't_start must be in (0, 1], got {t_start}')
  stochastic = sampler == 'ancestral' or eta > 0
  z = jnp.asarray(noise, jnp.float32)
  batch = z.shape[0]

  def step(i, z):
    logsnr_t = jnp.full((batch,), schedule.logsnr(t_start * (1.0 - i / steps)), jnp.float32)
    logsnr_s = jnp.full((batch,), schedule.logsnr(t_start * (1.0 - (i + 1) / steps)), jnp.float32)
    x0 = losses.x0_from_v(z, denoise_fn(z, logsnr_t).astype(jnp.float32), logsnr_t)
    x0 = guidance.dynamic_threshold(x0, dynamic_threshold) if dynamic_threshold else jnp.clip(x0, -1.0, 1.0)
    step_noise = jax.random.normal(jax.random.fold_in(rng, i), z.shape, z.dtype) if stochastic else None
    if sampler == 'ancestral':
      z_s = _ancestral_step(z, x0, logsnr_t, logsnr_s, step_noise)
    else:
      z_s = _ddim_step(z, x0, losses.eps_from_x0(z, x0, logsnr_t), logsnr_t, logsnr_s, eta, step_noise)
    return jnp.where(i == steps - 1, x0, z_s)

  return jax.lax.fori_loop(0, steps, step, z)
