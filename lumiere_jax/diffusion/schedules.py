"""Noise schedules of variance-preserving (VP) diffusion, written in log-SNR.

Time t runs from 0 (clean data) to 1 (pure noise). A schedule gives lambda(t) = log(alpha_t**2 / sigma_t**2); with
alpha**2 + sigma**2 = 1 that fixes alpha_t and sigma_t (Kingma et al. 2021, "Variational Diffusion Models").

Two kinds (`diffusion.schedule`), with one interface that losses, samplers and conditioning read:
- `Schedule` ('cosine_logsnr'): continuous cosine log-SNR; the model is told lambda(t) itself.
- `DiscreteSchedule` ('squaredcos_cap_v2'): the 1000-step DDPM cosine schedule of improved DDPM / DeepFloyd IF; t maps
  to the integer timestep k = round(t T) - 1 in [0, T - 1] (timestep k sits at t = (k + 1) / T), and the model is told
  k, as IF's U-Net is.
Interface: `logsnr(t)`, `model_input(t)` (the noise level the network reads), `training_times(u)` (u ~ U[0, 1) to
the times the loss trains at).
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ('cosine_logsnr', 'squaredcos_cap_v2')
SPACINGS = ('leading', 'trailing', 'linspace')  # of diffusers' DDPMScheduler timesteps


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

  kind = 'cosine_logsnr'
  model_input_dtype = jnp.float32

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

  def model_input(self, t):
    """The noise level the network reads at time t: lambda(t)."""
    return self.logsnr(t)

  def training_times(self, u):
    """Training times for u in [0, 1): u itself (continuous time)."""
    return u


def squaredcos_cap_v2_betas(num_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
  """float64 betas of improved DDPM's cosine schedule (diffusers' 'squaredcos_cap_v2'), each capped at max_beta.

  beta_k = 1 - abar((k + 1) / T) / abar(k / T), abar(t) = cos((t + 0.008) / 1.008 * pi / 2)**2.
  """
  abar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
  return np.array([min(1.0 - abar((k + 1) / num_timesteps) / abar(k / num_timesteps), max_beta)
                   for k in range(num_timesteps)])


@dataclasses.dataclass(frozen=True)
class DiscreteSchedule:
  """DeepFloyd IF's discrete schedule: `num_timesteps` DDPM steps of betas 'squaredcos_cap_v2'; hashable.

  The tables are float64 NumPy (exact), cast to float32 where they enter a computation.
  """

  num_timesteps: int = 1000
  max_beta: float = 0.999

  kind = 'squaredcos_cap_v2'
  model_input_dtype = jnp.int32

  def __post_init__(self):
    if self.num_timesteps < 2:
      raise ValueError(f'diffusion.num_timesteps must be >= 2, got {self.num_timesteps}')
    if not 0.0 < self.max_beta < 1.0:
      raise ValueError(f'the schedule\'s max_beta must be in (0, 1), got {self.max_beta}')

  @functools.cached_property
  def betas(self) -> np.ndarray:
    """beta_k, k = 0 .. T - 1."""
    return squaredcos_cap_v2_betas(self.num_timesteps, self.max_beta)

  @functools.cached_property
  def alphas_cumprod(self) -> np.ndarray:
    """abar_k = prod_{j <= k} (1 - beta_j)."""
    return np.cumprod(1.0 - self.betas)

  @functools.cached_property
  def _logsnr_table(self) -> np.ndarray:
    """float32 (T + 1,): entry k + 1 is lambda at timestep k; entry 0 (timestep -1, clean data) is +inf."""
    abar = self.alphas_cumprod
    return np.concatenate([[np.inf], np.log(abar) - np.log1p(-abar)]).astype(np.float32)

  def timestep(self, t):
    """The integer timestep of time t: round(t T) - 1, clipped to [0, T - 1]; int32, t's shape."""
    k = jnp.round(jnp.asarray(t, jnp.float32) * self.num_timesteps) - 1
    return jnp.clip(k, 0, self.num_timesteps - 1).astype(jnp.int32)

  def logsnr_at(self, timestep):
    """lambda at integer timesteps in [-1, T - 1]; -1 (before the first step: clean data) gives +inf."""
    return jnp.asarray(self._logsnr_table)[jnp.asarray(timestep) + 1]

  def logsnr(self, t):
    """lambda at the timestep of time t (piecewise constant in t)."""
    return self.logsnr_at(self.timestep(t))

  def model_input(self, t):
    """The noise level the network reads at time t: the int32 timestep, as IF's U-Net."""
    return self.timestep(t)

  def training_times(self, u):
    """Times of uniformly drawn timesteps for u in [0, 1): k = floor(u T) at t = (k + 1) / T."""
    k = jnp.clip(jnp.floor(u * self.num_timesteps), 0, self.num_timesteps - 1)
    return (k + 1) / self.num_timesteps

  def inference_timesteps(self, steps: int, spacing: str = 'leading') -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, previous timesteps) of a `steps`-step walk, both int (steps,), as diffusers' DDPMScheduler
    `set_timesteps` (steps_offset 0) and `previous_timestep` lay them out; the last previous timestep is -1.

    'leading' (IF's): k * (T // steps) descending; 'trailing': round(T - k T / steps) - 1; 'linspace':
    round(linspace(0, T - 1, steps)) descending.
    """
    if not 1 <= steps <= self.num_timesteps:
      raise ValueError(f'sample.steps must be in [1, {self.num_timesteps}] on this schedule, got {steps}')
    if spacing == 'leading':
      timesteps = np.arange(steps)[::-1] * (self.num_timesteps // steps)
    elif spacing == 'trailing':
      timesteps = np.round(np.arange(self.num_timesteps, 0, -self.num_timesteps / steps)).astype(np.int64) - 1
    elif spacing == 'linspace':
      timesteps = np.linspace(0, self.num_timesteps - 1, steps).round()[::-1].astype(np.int64)
    else:
      raise ValueError(f'sample.timestep_spacing must be one of {SPACINGS}, got {spacing!r}')
    return timesteps, np.append(timesteps[1:], -1)



def from_config(config):
  """The schedule `config.diffusion` names in its field `schedule`."""
  kind = config.schedule
  if kind == 'cosine_logsnr':
    return Schedule.from_config(config)
  if kind == 'squaredcos_cap_v2':
    return DiscreteSchedule(int(config.num_timesteps))
  raise ValueError(f'diffusion.schedule must be one of {SCHEDULES}, got {kind!r}')
