"""Temporal MultiDiffusion: window layout, exact averaging, and sampling equivalences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.diffusion import guidance, multidiffusion, samplers, schedules

SCHEDULE = schedules.Schedule(logsnr_min=-15.0, logsnr_max=15.0, shift=0.0)
MIX = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32) / 3


def frame_mixing(z, logsnr, text):
  """A toy denoiser whose output at each frame depends on its neighbours, the noise level and the text."""
  neighbours = jnp.roll(z, 1, axis=1) - jnp.roll(z, -1, axis=1)
  per_clip = lambda a: a[:, None, None, None, None]  # noqa: E731
  return jnp.tanh(z @ MIX + 0.5 * neighbours + 0.1 * per_clip(logsnr)) * per_clip(text)


def frame_by_frame(z, logsnr, text):
  """A toy denoiser that treats every frame on its own."""
  return jnp.tanh(z @ MIX + 0.1 * logsnr[:, None, None, None, None]) * text[:, None, None, None, None]


@pytest.mark.parametrize('num_frames, window, overlap, starts', [
    (8, 8, 2, (0,)), (10, 4, 1, (0, 3, 6)), (11, 4, 1, (0, 3, 6, 7)), (9, 4, 2, (0, 2, 4, 5)),
    (5, 1, 0, tuple(range(5))),
])
def test_window_starts_cover_the_clip(num_frames, window, overlap, starts):
  assert multidiffusion.window_starts(num_frames, window, overlap) == starts
  covered = np.zeros(num_frames, bool)
  for start in starts:
    covered[start:start + window] = True
  assert covered.all()


@pytest.mark.parametrize('window, overlap, field', [(9, 2, 'window'), (0, 0, 'window'), (4, 4, 'overlap'),
                                                    (4, -1, 'overlap')])
def test_bad_windows_name_the_field(window, overlap, field):
  with pytest.raises(ValueError, match=field):
    multidiffusion.window_starts(8, window, overlap)


@pytest.mark.parametrize('num_frames, window, overlap', [(10, 4, 1), (11, 4, 1), (9, 4, 2)])
def test_windowed_average_matches_a_float64_reference(num_frames, window, overlap):
  rng = np.random.default_rng(1)
  z = rng.standard_normal((2, num_frames, 2, 2, 3)).astype(np.float32)
  logsnr, text = np.array([0.5, -1.0], np.float32), np.array([1.0, 0.5], np.float32)
  got = multidiffusion.windowed(frame_mixing, num_frames=num_frames, window=window, overlap=overlap)(z, logsnr, text)
  total, count = np.zeros(z.shape, np.float64), np.zeros(num_frames)
  for start in multidiffusion.window_starts(num_frames, window, overlap):
    total[:, start:start + window] += np.asarray(frame_mixing(z[:, start:start + window], logsnr, text), np.float64)
    count[start:start + window] += 1
  np.testing.assert_allclose(got, total / count[None, :, None, None, None], rtol=1e-6, atol=1e-7)


def _sample(denoise_with_text, num_frames, sampler, seed=0):
  noise = jax.random.normal(jax.random.PRNGKey(seed), (2, num_frames, 2, 2, 3))
  cond, uncond = jnp.array([1.0, 0.5]), jnp.zeros(2)
  denoise = guidance.classifier_free_guidance(denoise_with_text, cond, uncond, 2.0)
  return samplers.sample(denoise, noise, schedule=SCHEDULE, steps=6, sampler=sampler, rng=jax.random.PRNGKey(7))


@pytest.mark.parametrize('sampler', ['ddim', 'ancestral'])
def test_one_window_is_plain_sampling_exactly(sampler):
  one = multidiffusion.windowed(frame_mixing, num_frames=8, window=8, overlap=3)
  np.testing.assert_array_equal(_sample(one, 8, sampler), _sample(frame_mixing, 8, sampler))


@pytest.mark.parametrize('num_frames, window, overlap', [(12, 4, 2), (10, 4, 1), (11, 4, 1), (9, 4, 2)])
def test_frame_by_frame_denoiser_is_unchanged_by_windows(num_frames, window, overlap):
  windows = multidiffusion.windowed(frame_by_frame, num_frames=num_frames, window=window, overlap=overlap)
  np.testing.assert_allclose(_sample(windows, num_frames, 'ancestral'), _sample(frame_by_frame, num_frames,
                                                                               'ancestral'), rtol=1e-6, atol=1e-6)
  assert not np.allclose(_sample(windows, num_frames, 'ancestral', seed=1), _sample(windows, num_frames, 'ancestral'))


def test_windows_spread_over_devices():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ('data',))
  spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  windows = multidiffusion.windowed(frame_mixing, num_frames=10, window=4, overlap=1, window_sharding=spread)
  plain = multidiffusion.windowed(frame_mixing, num_frames=10, window=4, overlap=1)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 10, 2, 2, 3))
  args = (z, jnp.zeros(2), jnp.ones(2))
  np.testing.assert_allclose(jax.jit(windows)(*args), plain(*args), rtol=1e-6, atol=1e-7)
  hlo = jax.jit(windows).lower(*args).as_text()
  assert 'sharding_constraint' in hlo and '[{"data"}, {}, {}, {}, {}]> : tensor<6x4x2x2x3' in hlo  # 3 windows x 2
