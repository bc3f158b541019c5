"""The v-prediction identities and the diffusion training loss (any `parameterization.Parameterization`).

With z = alpha x + sigma eps, the network predicts v = alpha eps - sigma x (Salimans & Ho 2022). Its target has unit
scale at every noise level, and x and eps are both linear in (z, v), so samplers and guidance can work with either.
Per-example log-SNR is (B,); the data x is (B, ...) of any rank.
"""

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import parameterization as parameterizations
from lumiere_jax.diffusion import schedules
from lumiere_jax.diffusion import vlb


def broadcast_batch(values, x):
  """Reshapes per-example values (B,) to (B, 1, ..., 1) so they broadcast against x (B, ...)."""
  return jnp.reshape(values, jnp.shape(values) + (1,) * (jnp.ndim(x) - jnp.ndim(values)))


def _alpha_sigma_like(logsnr, x):
  alpha, sigma = schedules.alpha_sigma(logsnr)
  return broadcast_batch(alpha, x), broadcast_batch(sigma, x)


def add_noise(x, eps, logsnr):
  """z = alpha x + sigma eps: the forward process at the given log-SNR."""
  alpha, sigma = _alpha_sigma_like(logsnr, x)
  return alpha * x + sigma * eps


def v_target(x, eps, logsnr):
  """v = alpha eps - sigma x, the regression target."""
  alpha, sigma = _alpha_sigma_like(logsnr, x)
  return alpha * eps - sigma * x


def x0_from_v(z, v, logsnr):
  """x = alpha z - sigma v."""
  alpha, sigma = _alpha_sigma_like(logsnr, z)
  return alpha * z - sigma * v


def eps_from_v(z, v, logsnr):
  """eps = sigma z + alpha v."""
  alpha, sigma = _alpha_sigma_like(logsnr, z)
  return sigma * z + alpha * v


def eps_from_x0(z, x0, logsnr):
  """eps = (z - alpha x0) / sigma: the noise consistent with z and a (possibly clipped) data estimate."""
  alpha, sigma = _alpha_sigma_like(logsnr, z)
  return (z - alpha * x0) / sigma


def stratified_uniform(rng, n):
  """n draws in [0, 1), one per stratum: (u0 + arange(n) / n) mod 1 with one shared u0 ~ U[0, 1).

  Each draw is marginally U[0, 1) but the batch covers [0, 1) evenly, lowering the loss variance (the low-discrepancy
  sampler of Kingma et al. 2021, "Variational Diffusion Models").
  """
  return jnp.mod(jax.random.uniform(rng, ()) + jnp.arange(n) / n, 1.0)


def diffusion_loss(denoise_fn, x, rng, schedule, parameterization=None):
  """Mean squared prediction error at stratified times t, plus the variance's bound term when it is learned; float32.

  With the defaults (v-prediction, fixed variance) the loss is the v MSE. With variance 'learned_range' (IF) it is
  improved DDPM's hybrid loss: per example, MSE + vlb_weight * T * L_k (`vlb.variance_term`, bits per dimension;
  T L_k is the bound's single-sample estimate, so vlb_weight = 0.001 at T = 1000 adds L_k itself).

  Args:
    denoise_fn: (z (B, ...), noise level (B,)) -> model output; the level is `schedule.model_input(t)` (log-SNR for
      the cosine schedule, the integer timestep for the discrete one).
    x: clean data (B, ...).
    rng: PRNG key for the times and the noise.
    schedule: a `schedules.Schedule` or `schedules.DiscreteSchedule` (times: uniformly drawn timesteps).
    parameterization: a `parameterization.Parameterization`; None is v-prediction with fixed variance.

  Returns:
    (loss scalar, aux) with aux['loss'] the per-example loss (B,) and aux['t'] the times (B,), for logging; with a
    learned variance also its parts aux['mse'] and aux['vb'] (B,).
  """
  parameterization = parameterization or parameterizations.V
  parameterization.check_schedule(schedule)
  x = jnp.asarray(x, jnp.float32)
  t_rng, eps_rng = jax.random.split(rng)
  t = schedule.training_times(stratified_uniform(t_rng, x.shape[0]))
  eps = jax.random.normal(eps_rng, x.shape, jnp.float32)
  logsnr = schedule.logsnr(t)
  z = add_noise(x, eps, logsnr)
  prediction, variance_values = parameterization.split(
      denoise_fn(z, schedule.model_input(t)).astype(jnp.float32), z)
  per_example = jnp.mean(jnp.square(prediction - parameterization.target(x, eps, logsnr)), axis=tuple(range(1, x.ndim)))
  aux = {'loss': per_example, 't': t}
  if variance_values is not None:
    vb = vlb.variance_term(schedule, x, z, parameterization.x0(z, prediction, logsnr), variance_values,
                           schedule.timestep(t))
    per_example = per_example + parameterization.vlb_weight * schedule.num_timesteps * vb
    aux.update(loss=per_example, mse=aux['loss'], vb=vb)
  return jnp.mean(per_example), aux
