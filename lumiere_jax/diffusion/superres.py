"""Super-resolution conditioning: the low-res view of a clip and its noise-conditioning augmentation.

Training pairs come from one clip: the high-res frames are the target; the low-res input is their box-filtered
(area) down-sampling, bilinearly up-sampled back to the target size and concatenated to the noisy input
(`model.cond_channels` = 3). Noise-conditioning augmentation (Ho et al. 2022, "Cascaded Diffusion Models") noises the
low-res input to a random level during training and feeds that level to the model (`model.cond_noise_level`), so at
sampling a base-model output, with its own artefacts, can be conditioned on at a small fixed level.
"""

import jax

from lumiere_jax.diffusion import losses


def downsample(video: jax.Array, factor: int) -> jax.Array:
  """(..., H, W, C) -> (..., H / factor, W / factor, C): the mean of each factor x factor block."""
  *lead, height, width, channels = video.shape
  if height % factor or width % factor:
    raise ValueError(f'frames of {height}x{width} do not divide into {factor}x{factor} blocks')
  blocks = video.reshape(*lead, height // factor, factor, width // factor, factor, channels)
  return blocks.mean(axis=(-4, -2))


def upsample(video: jax.Array, height: int, width: int) -> jax.Array:
  """(..., h, w, C) -> (..., height, width, C), bilinear with half-pixel centres and clamped edges."""
  return jax.image.resize(video, (*video.shape[:-3], height, width, video.shape[-1]), 'bilinear')


def lowres_condition(video: jax.Array, factor: int) -> jax.Array:
  """The clip as the SR model sees its low-res input: down-sampled by `factor`, then up to the clip's size."""
  return upsample(downsample(video, factor), *video.shape[-3:-1])


def augment(condition: jax.Array, rng: jax.Array, schedule, max_time: float) -> tuple[jax.Array, jax.Array]:
  """(noised condition, its noise level (B,) as the model reads it) at a time drawn uniformly in [0, max_time] per
  example; the level is `schedule.model_input`: the log-SNR, or a discrete schedule's timestep (IF stage II's
  `noise_level`)."""
  rng_time, rng_noise = jax.random.split(rng)
  times = jax.random.uniform(rng_time, condition.shape[:1], maxval=max_time)
  noised = losses.add_noise(condition, jax.random.normal(rng_noise, condition.shape), schedule.logsnr(times))
  return noised, schedule.model_input(times)
