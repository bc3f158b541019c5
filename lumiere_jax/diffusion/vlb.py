"""The variational-bound term that trains a learned-range variance (improved DDPM, Nichol & Dhariwal 2021).

As improved DDPM's `_vb_terms_bpd` (the code DeepFloyd IF ships in `deepfloyd_if/model/gaussian_diffusion.py`): at
timestep k > 0 the KL between the forward posterior q(x_{k-1} | x_k, x0) and the model's p(x_{k-1} | x_k); at k = 0
the negative log-likelihood of the data under the model's Gaussian discretised to 256 levels in [-1, 1]. Both in bits
per dimension (mean over the non-batch axes, / log 2). The model's mean is the posterior mean at its x0 estimate,
passed in with its gradient stopped, so this term trains the variance only. The log variance is
frac log(beta_k) + (1 - frac) log(posterior variance_k), frac = (values + 1) / 2, with the posterior variance at
k = 0 (zero) replaced by that at k = 1 ("clipped", as improved DDPM). The normal CDF is improved DDPM's tanh
approximation, so the term equals theirs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=8)
def posterior_tables(schedule) -> dict[str, np.ndarray]:
  """float64 tables (T,) of a `DiscreteSchedule`: the posterior mean coefficients of x0 and x_k, the clipped posterior
  log variance and log beta."""
  betas, abar = schedule.betas, schedule.alphas_cumprod
  abar_prev = np.append(1.0, abar[:-1])
  variance = betas * (1.0 - abar_prev) / (1.0 - abar)
  return dict(coef_x0=betas * np.sqrt(abar_prev) / (1.0 - abar),
              coef_xt=(1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar),
              log_variance=np.log(np.append(variance[1], variance[1:])),
              log_beta=np.log(betas))


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, in nats."""
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + jnp.square(mean1 - mean2) * jnp.exp(-logvar2))


def _approx_normal_cdf(x):
  return 0.5 * (1.0 + jnp.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
  """log P(x) per element for data x in [-1, 1] on 256 levels (bins of width 2/255, the end bins open), nats."""
  centered, inv_std = x - mean, jnp.exp(-log_scale)
  cdf_plus = _approx_normal_cdf(inv_std * (centered + 1.0 / 255.0))
  cdf_min = _approx_normal_cdf(inv_std * (centered - 1.0 / 255.0))
  log = lambda p: jnp.log(jnp.maximum(p, 1e-12))  # noqa: E731
  return jnp.where(x < -0.999, log(cdf_plus), jnp.where(x > 0.999, log(1.0 - cdf_min), log(cdf_plus - cdf_min)))


def variance_term(schedule, x, z, x0_estimate, variance_values, timestep):
  """L_k in bits per dimension (B,) for data x, its noised z at integer `timestep` (B,), and the model's outputs.

  x0_estimate: the model's data estimate at z (its gradient is stopped here); variance_values: its learned-range
  values in [-1, 1], shaped like x.
  """
  per_example = timestep.shape + (1,) * (x.ndim - 1)
  tables = {name: jnp.asarray(table, jnp.float32)[timestep].reshape(per_example)
            for name, table in posterior_tables(schedule).items()}
  posterior_mean = lambda x0: tables['coef_x0'] * x0 + tables['coef_xt'] * z  # noqa: E731
  frac = (variance_values + 1.0) / 2.0
  model_log_variance = frac * tables['log_beta'] + (1.0 - frac) * tables['log_variance']
  model_mean = posterior_mean(jax.lax.stop_gradient(x0_estimate))
  axes = tuple(range(1, x.ndim))
  kl = jnp.mean(normal_kl(posterior_mean(x), tables['log_variance'], model_mean, model_log_variance), axis=axes)
  nll = -jnp.mean(discretized_gaussian_log_likelihood(x, model_mean, 0.5 * model_log_variance), axis=axes)
  return jnp.where(timestep == 0, nll, kl) / np.log(2.0)
