"""Super-resolution conditioning against float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.diffusion import schedules, superres


def bilinear_reference(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Half-pixel-centre bilinear up-sampling of (h, w, C), edges clamped, one output pixel at a time."""
  h, w, _ = image.shape
  out = np.zeros((height, width, image.shape[-1]))
  for i in range(height):
    for j in range(width):
      y = min(max((i + 0.5) * h / height - 0.5, 0), h - 1)
      x = min(max((j + 0.5) * w / width - 0.5, 0), w - 1)
      y0, x0 = int(np.floor(y)), int(np.floor(x))
      y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
      fy, fx = y - y0, x - x0
      out[i, j] = ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x1])
                   + fy * ((1 - fx) * image[y1, x0] + fx * image[y1, x1]))
  return out


def test_downsample_is_the_block_mean():
  video = np.random.default_rng(0).normal(size=(2, 3, 8, 12, 3))
  expected = video.reshape(2, 3, 2, 4, 3, 4, 3).mean(axis=(3, 5))
  np.testing.assert_allclose(superres.downsample(jnp.asarray(video, jnp.float32), 4), expected, atol=1e-6)
  with pytest.raises(ValueError, match='8x12 do not divide into 5x5'):
    superres.downsample(jnp.zeros((1, 8, 12, 3)), 5)


@pytest.mark.parametrize('size, target', [((4, 4), (16, 16)), ((3, 5), (12, 10))])
def test_upsample_matches_half_pixel_bilinear(size, target):
  image = np.random.default_rng(1).normal(size=(*size, 3))
  got = superres.upsample(jnp.asarray(image[None, None], jnp.float32), *target)[0, 0]
  np.testing.assert_allclose(got, bilinear_reference(image, *target), atol=1e-5)


def test_lowres_condition_keeps_the_shape_and_loses_detail():
  video = jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 16, 16, 3), minval=-1, maxval=1)
  condition = superres.lowres_condition(video, 4)
  assert condition.shape == video.shape
  np.testing.assert_allclose(superres.downsample(condition, 4).mean(), superres.downsample(video, 4).mean(),
                             atol=1e-5)  # the low frequencies survive
  assert float(jnp.abs(condition - video).mean()) > 0.2  # the detail of white noise does not


def test_augment_noises_each_example_to_its_own_level():
  schedule = schedules.Schedule(-15.0, 15.0, 0.0)
  condition = jnp.ones((64, 2, 4, 4, 3))
  noised, logsnr = superres.augment(condition, jax.random.PRNGKey(0), schedule, max_time=0.5)
  assert logsnr.shape == (64,) and float(logsnr.min()) >= float(schedule.logsnr(0.5)) - 1e-4
  alpha, sigma = schedules.alpha_sigma(logsnr)
  residual = (noised - alpha[:, None, None, None, None]) / sigma[:, None, None, None, None]  # the unit noise
  assert abs(float(residual.std()) - 1) < 0.05 and abs(float(residual.mean())) < 0.05
