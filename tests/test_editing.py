"""Editing: SDEdit's endpoints and start, stylization by spatial weight interpolation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax import editing
from lumiere_jax.diffusion import losses, samplers, schedules

SCHEDULE = schedules.Schedule(logsnr_min=-15.0, logsnr_max=15.0, shift=0.0)


def _params(seed, temporal_scale=1.0):
  rng = np.random.default_rng(seed)
  shapes = {'unet.conv_in.kernel': (3, 3, 3, 4), 'unet.down.0.res.0.film.bias': (8,),
            'unet.down.0.layers.0.temporal.0.proj.kernel': (4, 4), 'unet.temporal_resize.conv.kernel': (3, 4, 4),
            'text_encoder.embed.embedding': (10, 4)}
  return {k: jnp.asarray(rng.standard_normal(s) * (temporal_scale if 'temporal' in k else 1), jnp.float32)
          for k, s in shapes.items()}


def test_alpha_zero_returns_the_original_bit_exactly():
  original, style = _params(0), _params(1)
  out = editing.interpolate_spatial(original, style, 0.0)
  assert out.keys() == original.keys() and all(np.array_equal(out[k], original[k]) for k in original)


@pytest.mark.parametrize('alpha', [0.25, 0.5, 1.0])
def test_spatial_leaves_interpolate_and_temporal_ones_stay(alpha):
  original, style = _params(0), _params(1, temporal_scale=5.0)
  out = editing.interpolate_spatial(original, style, alpha)
  for key, value in original.items():
    if 'temporal' in key:
      np.testing.assert_array_equal(out[key], value, err_msg=key)
    else:
      want = (1 - alpha) * np.float64(value) + alpha * np.float64(style[key])
      np.testing.assert_allclose(out[key], want, rtol=1e-6, atol=1e-6, err_msg=key)
      assert not np.array_equal(out[key], value)


def test_spatial_only_style_checkpoint_is_enough():
  original = _params(0)
  t2i_style = {k: v for k, v in _params(1).items() if 'temporal' not in k}
  out = editing.interpolate_spatial(original, t2i_style, 0.5)
  assert all(np.array_equal(out[k], original[k]) for k in original if 'temporal' in k)


@pytest.mark.parametrize('alpha', [-0.1, 1.5])
def test_alpha_outside_the_unit_interval_is_refused(alpha):
  with pytest.raises(ValueError, match='alpha'):
    editing.interpolate_spatial(_params(0), _params(1), alpha)


@pytest.mark.parametrize('change, problem', [
    (lambda p: p.pop('unet.conv_in.kernel'), r'missing \[.unet\.conv_in\.kernel'),
    (lambda p: p.update({'unet.extra.kernel': jnp.zeros(2)}), r'unexpected \[.unet\.extra\.kernel'),
    (lambda p: p.update({'unet.down.0.res.0.film.bias': jnp.zeros(9)}), r'mis_shaped \[.unet\.down\.0\.res\.0'),
])
def test_mismatched_style_tree_names_the_key(change, problem):
  style = _params(1)
  change(style)
  with pytest.raises(ValueError, match=problem):
    editing.interpolate_spatial(_params(0), style, 0.5)


def _denoiser(z, logsnr):
  return jnp.tanh(z + 0.1 * logsnr[:, None, None, None, None])


def _sample_from(z, t_start):
  return samplers.sample(_denoiser, z, schedule=SCHEDULE, steps=5, sampler='ancestral', rng=jax.random.PRNGKey(3),
                         t_start=t_start)


def _video_and_noise():
  video = jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 3, 3, 3), minval=-1, maxval=1)
  return video, jax.random.normal(jax.random.PRNGKey(1), video.shape)


def test_sdedit_endpoints():
  video, noise = _video_and_noise()
  edit = functools.partial(editing.sdedit, _sample_from, video, noise, schedule=SCHEDULE)
  np.testing.assert_array_equal(edit(strength=0.0), video)
  np.testing.assert_array_equal(edit(strength=1.0), _sample_from(noise, 1.0))
  with pytest.raises(ValueError, match='strength'):
    edit(strength=1.2)


def test_sdedit_starts_from_the_forward_process_at_its_strength():
  video, noise = _video_and_noise()
  start = editing.sdedit(lambda z, t: (z, t), video, noise, schedule=SCHEDULE, strength=0.4)
  logsnr = float(SCHEDULE.logsnr(0.4))
  alpha, sigma = np.sqrt(1 / (1 + np.exp(-logsnr))), np.sqrt(1 / (1 + np.exp(logsnr)))  # float64 reference
  np.testing.assert_allclose(start[0], alpha * np.float64(video) + sigma * np.float64(noise), rtol=1e-5, atol=1e-6)
  assert start[1] == 0.4


def test_sdedit_with_an_oracle_denoiser_returns_the_input():
  video, noise = _video_and_noise()

  def oracle(z, logsnr):  # the v that points exactly at `video`
    alpha, sigma = schedules.alpha_sigma(losses.broadcast_batch(logsnr, z))
    return (alpha * z - video) / sigma

  sample_from = lambda z, t: samplers.sample(oracle, z, schedule=SCHEDULE, steps=4, t_start=t)  # noqa: E731
  out = editing.sdedit(sample_from, video, noise, schedule=SCHEDULE, strength=0.6)
  np.testing.assert_allclose(out, video, atol=1e-4)
