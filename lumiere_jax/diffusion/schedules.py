"""Noise schedules of continuous-time variance-preserving (VP) diffusion, written in log-SNR.

Time t runs from 0 (clean data) to 1 (pure noise). A schedule gives lambda(t) = log(alpha_t**2 / sigma_t**2); with
alpha**2 + sigma**2 = 1 that fixes alpha_t and sigma_t (Kingma et al. 2021, "Variational Diffusion Models").
"""

import dataclasses

import jax
import jax.numpy as jnp


def cosine_logsnr(t, *, logsnr_min, logsnr_max, shift=0.0):
  """Truncated cosine schedule -2 log tan(a t + b), spanning [logsnr_min, logsnr_max] on t in [0, 1], plus `shift`.

  a and b put lambda(0) = logsnr_max and lambda(1) = logsnr_min (Kingma & Hoogeboom's `logsnr_schedule_cosine`).
  A negative shift noises high resolutions more: Hoogeboom et al. 2023 use 2 log(64 / resolution).
  """
  b = jnp.arctan(jnp.exp(-0.5 * logsnr_max))
  a = jnp.arctan(jnp.exp(-0.5 * logsnr_min)) - b
  return -2.0 * jnp.log(jnp.tan(a * t + b)) + shift


def alpha_sigma(logsnr):
  """(alpha, sigma) with alpha**2 = sigmoid(logsnr), sigma**2 = sigmoid(-logsnr); finite for any log-SNR."""
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The cosine log-SNR schedule of `config.diffusion`; hashable, so it can be a static argument of `jax.jit`."""

  logsnr_min: float
  logsnr_max: float
  shift: float

  def __post_init__(self):
    if not self.logsnr_min < self.logsnr_max:
      raise ValueError(f'diffusion.logsnr_min ({self.logsnr_min}) must be below diffusion.logsnr_max '
                       f'({self.logsnr_max})')

  @classmethod
  def from_config(cls, config):
    """Builds the schedule from `config.diffusion` (fields logsnr_min, logsnr_max, logsnr_shift)."""
    return cls(float(config.logsnr_min), float(config.logsnr_max), float(config.logsnr_shift))

  def logsnr(self, t):
    """lambda(t) for t in [0, 1], any shape."""
    return cosine_logsnr(t, logsnr_min=self.logsnr_min, logsnr_max=self.logsnr_max, shift=self.shift)
