"""What the network predicts (`diffusion.parameterization`, `diffusion.variance`) and the conversions it implies.

- prediction 'v' (ours, Salimans & Ho 2022): v = alpha eps - sigma x; 'eps' (DDPM, DeepFloyd IF): the noise itself.
- variance 'fixed': the output is the prediction alone (C channels); 'learned_range' (improved DDPM, Nichol &
  Dhariwal 2021; IF): 2C channels, the prediction then per-element values in [-1, 1] that interpolate the log
  variance of each reverse step between the posterior variance (-1) and the step's beta (+1). It needs a discrete
  schedule (`schedules.DiscreteSchedule`), whose steps define those variances.
Every x0 / eps conversion from a model output happens here, so losses, samplers and guidance read any
parameterization the same way.
"""

import dataclasses

import jax.numpy as jnp

from lumiere_jax.diffusion import losses, schedules

PREDICTIONS = ('v', 'eps')
VARIANCES = ('fixed', 'learned_range')


@dataclasses.dataclass(frozen=True)
class Parameterization:
  """The network's output convention; hashable (a static argument of `jax.jit`).

  vlb_weight: lambda of improved DDPM's hybrid loss L_simple + lambda L_vlb (0.001 there), with L_vlb = T E_t[L_t];
  read only with variance 'learned_range'.
  """

  prediction: str = 'v'
  variance: str = 'fixed'
  vlb_weight: float = 0.001

  def __post_init__(self):
    if self.prediction not in PREDICTIONS:
      raise ValueError(f'diffusion.parameterization must be one of {PREDICTIONS}, got {self.prediction!r}')
    if self.variance not in VARIANCES:
      raise ValueError(f'diffusion.variance must be one of {VARIANCES}, got {self.variance!r}')
    if self.vlb_weight < 0:
      raise ValueError(f'diffusion.vlb_weight must be >= 0, got {self.vlb_weight}')

  @classmethod
  def from_config(cls, config):
    """From `config.diffusion`: its fields parameterization, variance and vlb_weight."""
    return cls(config.parameterization, config.variance, float(config.vlb_weight))

  @property
  def learned_variance(self) -> bool:
    return self.variance == 'learned_range'

  def output_channels(self, data_channels: int) -> int:
    """Channels of the network's output for data of `data_channels` channels."""
    return 2 * data_channels if self.learned_variance else data_channels

  def check_schedule(self, schedule) -> None:
    """Raises ValueError when the schedule cannot serve this parameterization (learned variance: discrete only)."""
    if self.learned_variance and not isinstance(schedule, schedules.DiscreteSchedule):
      raise ValueError(f'diffusion.variance={self.variance!r} needs a discrete schedule (diffusion.schedule='
                       f'\'squaredcos_cap_v2\'), got diffusion.schedule={schedule.kind!r}')

  def split(self, output, like):
    """(prediction, variance values or None) of a model output for a sample `like` (B, ..., C); the channels are
    the last axis. Raises ValueError when the output's shape is not what this parameterization needs."""
    expected = (*like.shape[:-1], self.output_channels(like.shape[-1]))
    if tuple(output.shape) != expected:
      raise ValueError(f'model output of shape {tuple(output.shape)} for a sample of shape {tuple(like.shape)}: '
                       f'diffusion.parameterization={self.prediction!r} with diffusion.variance={self.variance!r} '
                       f'needs {expected}')
    if not self.learned_variance:
      return output, None
    prediction, values = jnp.split(output, 2, axis=-1)
    return prediction, values

  def target(self, x, eps, logsnr):
    """The regression target of the prediction for data x noised by eps at log-SNR (B,)."""
    return losses.v_target(x, eps, logsnr) if self.prediction == 'v' else eps

  def x0(self, z, prediction, logsnr):
    """The data estimate at z: alpha z - sigma v, or (z - sigma eps) / alpha."""
    if self.prediction == 'v':
      return losses.x0_from_v(z, prediction, logsnr)
    alpha, sigma = schedules.alpha_sigma(losses.broadcast_batch(logsnr, z))
    return (z - sigma * prediction) / alpha


V = Parameterization()
IF = Parameterization('eps', 'learned_range')
