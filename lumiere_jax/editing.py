"""Editing without retraining (DESIGN section 1): SDEdit and stylization by spatial weight interpolation.

- SDEdit (Meng et al. 2022): noise the input video to time `strength` of the forward process and denoise from
  there. Strength 0 returns the input untouched; strength 1 starts from the noise alone, i.e. ordinary sampling with
  the same seed.
- Stylization (Lumiere section 4.1): the spatial weights become (1 - alpha) * original + alpha * style, where the
  style weights come from the T2I model fine-tuned on a style; the temporal weights, which carry the motion prior,
  are never touched. alpha = 0 is the original model.
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import losses, schedules
from lumiere_jax.models import params as params_lib


def sdedit(sample_from: Callable[[jax.Array, float], jax.Array], video: jax.Array, noise: jax.Array, *,
           schedule, strength: float) -> jax.Array:
  """Edits `video` (B, ...) in [-1, 1] with SDEdit.

  Args:
    sample_from: (z at t_start, t_start) -> denoised clip, e.g.
      `lambda z, t: samplers.sample(denoise_fn, z, ..., t_start=t)`.
    video: the clip to edit.
    noise: standard normal like `video` (the seed's noise).
    schedule: the model's noise schedule (`schedules.from_config`).
    strength: in [0, 1]; how far into the forward process the input is noised.
  """
  if check_strength(strength) == 0:
    return video
  return sample_from(noised(video, noise, schedule=schedule, strength=strength), strength)


def check_strength(strength: float) -> float:
  """`strength`, or ValueError when it is outside [0, 1]."""
  if not 0.0 <= strength <= 1.0:
    raise ValueError(f'strength={strength} must be in [0, 1]')
  return strength


def noised(video: jax.Array, noise: jax.Array, *, schedule, strength: float) -> jax.Array:
  """Where SDEdit's walk starts: `video` noised to time `strength` of the forward process (at 1: `noise` itself)."""
  if strength == 1:
    return noise
  logsnr = jnp.full((video.shape[0],), schedule.logsnr(strength), jnp.float32)
  alpha, sigma = schedules.alpha_sigma(losses.broadcast_batch(logsnr, video))
  return alpha * video + sigma * noise


def interpolate_spatial(original: Mapping[str, jax.Array], style: Mapping[str, jax.Array],
                        alpha: float) -> dict[str, jax.Array]:
  """Flat parameters with every spatial leaf at (1 - alpha) * original + alpha * style; temporal leaves as they are.

  `style` holds at least the spatial parameters (a T2I checkpoint); its temporal ones, if any, are ignored. Raises
  ValueError for alpha outside [0, 1] or a style tree whose spatial keys or shapes differ, naming them.
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f'alpha={alpha} must be in [0, 1]')
  spatial = set(params_lib.select(original, 'temporal')[1])
  style_spatial = set(params_lib.select(style, 'temporal')[1])
  problems = dict(missing=sorted(spatial - style_spatial), unexpected=sorted(style_spatial - spatial),
                  mis_shaped=sorted(k for k in spatial & style_spatial if original[k].shape != style[k].shape))
  if any(problems.values()):
    listed = '; '.join(f'{name} {keys[:5]}{" ..." * (len(keys) > 5)}' for name, keys in problems.items() if keys)
    raise ValueError(f'style checkpoint does not match the model\'s spatial parameters: {listed}')
  if alpha == 0:
    return dict(original)
  return {key: (1 - alpha) * value + alpha * style[key] if key in spatial else value
          for key, value in original.items()}
