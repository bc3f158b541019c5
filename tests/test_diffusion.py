"""Diffusion maths against independent float64 NumPy references: schedule, v-parameterisation, loss, samplers."""

import importlib.util
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion import schedules

LOGSNR_MIN, LOGSNR_MAX = -15.0, 15.0
SCHEDULE = schedules.Schedule(LOGSNR_MIN, LOGSNR_MAX, 0.0)
VIDEO_SHAPE = (3, 2, 4, 4, 3)


def np_logsnr(t, shift=0.0):
  b = np.arctan(np.exp(-0.5 * LOGSNR_MAX))
  a = np.arctan(np.exp(-0.5 * LOGSNR_MIN)) - b
  return -2.0 * np.log(np.tan(a * np.asarray(t, np.float64) + b)) + shift


def np_alpha_sigma(logsnr):
  """alpha, sigma (float64) shaped to broadcast against a (B, T, H, W, C) video."""
  logsnr = np.asarray(logsnr, np.float64)
  return np.sqrt(1.0 / (1.0 + np.exp(-logsnr))), np.sqrt(1.0 / (1.0 + np.exp(logsnr)))


def as_video(per_example):
  return np.asarray(per_example, np.float64).reshape(-1, 1, 1, 1, 1)


def normal(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape)


def load_config():
  path = pathlib.Path(__file__).resolve().parent.parent / 'configs' / 'lumiere.py'
  spec = importlib.util.spec_from_file_location('lumiere_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# Schedule.


def test_schedule_matches_numpy_on_grid():
  t = np.linspace(0.0, 1.0, 201)
  got = np.asarray(SCHEDULE.logsnr(jnp.asarray(t, jnp.float32)))
  np.testing.assert_allclose(got, np_logsnr(t), atol=1e-4)
  assert got[0] == pytest.approx(LOGSNR_MAX, abs=1e-4)
  assert got[-1] == pytest.approx(LOGSNR_MIN, abs=1e-4)
  assert np.all(np.diff(got) < 0)


def test_schedule_shift_adds_and_config_fields():
  config = load_config()
  config.diffusion.logsnr_shift = -1.5
  schedule = schedules.Schedule.from_config(config.diffusion)
  assert (schedule.logsnr_min, schedule.logsnr_max, schedule.shift) == (
      config.diffusion.logsnr_min, config.diffusion.logsnr_max, -1.5)
  t = jnp.linspace(0.0, 1.0, 11)
  np.testing.assert_allclose(schedule.logsnr(t) - SCHEDULE.logsnr(t), -1.5, atol=1e-5)
  np.testing.assert_allclose(schedule.logsnr(t), np_logsnr(t, -1.5), atol=1e-4)


def test_alpha_sigma_matches_numpy_and_is_variance_preserving():
  logsnr = np.linspace(-30.0, 30.0, 121)
  alpha, sigma = map(np.asarray, schedules.alpha_sigma(jnp.asarray(logsnr, jnp.float32)))
  ref_alpha, ref_sigma = np_alpha_sigma(logsnr)
  np.testing.assert_allclose(alpha, ref_alpha, rtol=1e-5, atol=1e-12)
  np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-5, atol=1e-12)
  np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=1e-6)
  np.testing.assert_allclose(np.log(alpha**2 / sigma**2)[10:-10], logsnr[10:-10], atol=1e-3)


# The v-parameterisation.


def test_broadcast_batch_shapes():
  x = jnp.zeros(VIDEO_SHAPE)
  assert losses.broadcast_batch(jnp.arange(3.0), x).shape == (3, 1, 1, 1, 1)
  assert losses.broadcast_batch(jnp.arange(3.0), jnp.zeros(3)).shape == (3,)


def test_noising_identities_match_numpy_and_round_trip():
  x, eps = normal(0, VIDEO_SHAPE), normal(1, VIDEO_SHAPE)
  logsnr = np.array([-12.0, 0.3, 9.0])
  alpha, sigma = np_alpha_sigma(as_video(logsnr))
  ref_z, ref_v = alpha * x + sigma * eps, alpha * eps - sigma * x
  args = [jnp.asarray(a, jnp.float32) for a in (x, eps, logsnr)]
  z, v = losses.add_noise(*args), losses.v_target(*args)
  np.testing.assert_allclose(z, ref_z, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(v, ref_v, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses.x0_from_v(z, v, args[2]), x, atol=1e-5)
  np.testing.assert_allclose(losses.eps_from_v(z, v, args[2]), eps, atol=1e-5)
  np.testing.assert_allclose(losses.eps_from_x0(z, args[0], args[2]), eps, atol=1e-4)


# The training loss.


def test_loss_is_zero_for_the_oracle_and_jits():
  x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, VIDEO_SHAPE), jnp.float32)

  def oracle(z, logsnr):
    alpha, sigma = schedules.alpha_sigma(losses.broadcast_batch(logsnr, z))
    return (alpha * z - x) / sigma

  loss, aux = jax.jit(lambda rng: losses.diffusion_loss(oracle, x, rng, SCHEDULE))(jax.random.key(0))
  assert loss.dtype == jnp.float32 and aux['loss'].shape == aux['t'].shape == (3,)
  assert 0.0 <= float(loss) < 1e-6


def test_loss_matches_numpy_for_an_imperfect_model():
  x = np.random.default_rng(3).uniform(-1, 1, VIDEO_SHAPE)
  seen = {}

  def half_z(z, logsnr):
    seen.update(z=np.asarray(z, np.float64), logsnr=np.asarray(logsnr, np.float64))
    return 0.5 * z

  loss, aux = losses.diffusion_loss(half_z, jnp.asarray(x, jnp.float32), jax.random.key(1), SCHEDULE)
  np.testing.assert_allclose(seen['logsnr'], np_logsnr(aux['t']), atol=1e-4)
  alpha, sigma = np_alpha_sigma(as_video(seen['logsnr']))
  v = (alpha * seen['z'] - x) / sigma  # = alpha eps - sigma x, written with z
  ref = np.mean((0.5 * seen['z'] - v) ** 2, axis=(1, 2, 3, 4))
  np.testing.assert_allclose(aux['loss'], ref, rtol=1e-3)
  assert float(loss) == pytest.approx(ref.mean(), rel=1e-3) and float(loss) > 0.01


def test_loss_times_are_stratified():
  batch = 16
  draws = [np.asarray(losses.stratified_uniform(jax.random.key(seed), batch)) for seed in range(5)]
  for t in draws:
    assert np.all((t >= 0.0) & (t < 1.0))
    np.testing.assert_allclose(np.diff(np.sort(t)), 1.0 / batch, atol=1e-6)
    assert len(np.unique(np.floor(t * batch))) == batch  # one draw per stratum
  assert len({float(t[0]) for t in draws}) == len(draws)


# Samplers.


def toy_v(xp, z, logsnr):
  """A fixed nonlinear stand-in for the network (works for numpy and jax.numpy)."""
  logsnr = xp.reshape(logsnr, (-1,) + (1,) * (z.ndim - 1))
  return 3.0 * xp.tanh(z) + 0.05 * logsnr * z


def np_dynamic_threshold(x0, percentile):
  s = np.quantile(np.abs(x0).reshape(len(x0), -1), percentile, axis=1)
  s = np.maximum(s, 1.0).reshape((-1,) + (1,) * (x0.ndim - 1))
  return np.clip(x0, -s, s) / s


def np_sample(noise, step_noise, *, steps, sampler, eta, dynamic_threshold):
  """Float64 reference written from the papers: DDIM in abar = alpha**2 form; ancestral as the VP posterior."""
  z = np.asarray(noise, np.float64)
  batch = len(z)
  for i in range(steps):
    lt, ls = np_logsnr(1.0 - i / steps), np_logsnr(1.0 - (i + 1) / steps)
    abar_t, abar_s = 1.0 / (1.0 + np.exp(-lt)), 1.0 / (1.0 + np.exp(-ls))
    alpha_t, sigma_t, alpha_s, sigma_s = np.sqrt([abar_t, 1 - abar_t, abar_s, 1 - abar_s])
    x0 = alpha_t * z - sigma_t * toy_v(np, z, np.full(batch, lt))
    x0 = np_dynamic_threshold(x0, dynamic_threshold) if dynamic_threshold else np.clip(x0, -1.0, 1.0)
    if i == steps - 1:
      return x0
    eps = (z - alpha_t * x0) / sigma_t
    if sampler == 'ddim':
      c = eta * np.sqrt((1 - abar_s) / (1 - abar_t)) * np.sqrt(1 - abar_t / abar_s)
      z = alpha_s * x0 + np.sqrt(1 - abar_s - c**2) * eps + c * step_noise[i]
    else:
      alpha_ts = alpha_t / alpha_s
      sigma_ts2 = sigma_t**2 - alpha_ts**2 * sigma_s**2
      mean = alpha_ts * sigma_s**2 / sigma_t**2 * z + alpha_s * sigma_ts2 / sigma_t**2 * x0
      z = mean + np.sqrt(sigma_ts2 * sigma_s**2 / sigma_t**2) * step_noise[i]


@pytest.mark.parametrize('sampler,eta,threshold', [
    ('ddim', 0.0, 0.0), ('ddim', 0.5, 0.9), ('ddim', 1.0, 0.0), ('ancestral', 0.0, 0.0), ('ancestral', 0.0, 0.95)])
def test_sampler_matches_numpy_reference(sampler, eta, threshold):
  steps, rng = 4, jax.random.key(7)
  noise = jax.random.normal(jax.random.key(8), VIDEO_SHAPE)
  step_noise = [np.asarray(jax.random.normal(jax.random.fold_in(rng, i), VIDEO_SHAPE)) for i in range(steps)]
  settings = dict(schedule=SCHEDULE, steps=steps, sampler=sampler, eta=eta, rng=rng, dynamic_threshold=threshold)
  denoise_fn = lambda z, logsnr: toy_v(jnp, z, logsnr)  # noqa: E731
  got = samplers.sample(denoise_fn, noise, **settings)
  ref = np_sample(noise, step_noise, steps=steps, sampler=sampler, eta=eta, dynamic_threshold=threshold)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
  step, z = jax.jit(samplers.stepper(denoise_fn, **settings)), noise  # one jitted call per step, as `sample.Sampler`
  for i in range(steps):
    z = step(np.int32(i), z)
  np.testing.assert_allclose(z, ref, rtol=1e-4, atol=1e-4)


def test_ddim_eta_one_equals_ancestral():
  noise = jax.random.normal(jax.random.key(9), VIDEO_SHAPE)
  kwargs = dict(schedule=SCHEDULE, steps=3, rng=jax.random.key(10))
  denoise_fn = lambda z, logsnr: toy_v(jnp, z, logsnr)
  ddim = samplers.sample(denoise_fn, noise, sampler='ddim', eta=1.0, **kwargs)
  ancestral = samplers.sample(denoise_fn, noise, sampler='ancestral', **kwargs)
  deterministic = samplers.sample(denoise_fn, noise, sampler='ddim', eta=0.0, **kwargs)
  np.testing.assert_allclose(ddim, ancestral, atol=1e-4)
  assert np.abs(np.asarray(ddim - deterministic)).max() > 1e-2


def test_sampler_traces_the_model_once():
  traces = []

  def denoise_fn(z, logsnr):
    traces.append(z.shape)
    return toy_v(jnp, z, logsnr)

  jax.jit(lambda n: samplers.sample(denoise_fn, n, schedule=SCHEDULE, steps=10))(jnp.zeros(VIDEO_SHAPE))
  assert traces == [VIDEO_SHAPE]


@pytest.mark.parametrize('sampler,eta', [('ddim', 0.0), ('ddim', 1.0), ('ancestral', 0.0)])
@pytest.mark.parametrize('steps', [1, 3, 25])
def test_oracle_denoiser_recovers_data(sampler, eta, steps):
  x = jnp.asarray(np.random.default_rng(4).uniform(-0.99, 0.99, VIDEO_SHAPE), jnp.float32)

  def oracle(z, logsnr):
    alpha, sigma = schedules.alpha_sigma(losses.broadcast_batch(logsnr, z))
    eps = (z - alpha * x) / sigma
    return alpha * eps - sigma * x

  noise = jax.random.normal(jax.random.key(11), VIDEO_SHAPE)
  got = jax.jit(lambda n: samplers.sample(oracle, n, schedule=SCHEDULE, steps=steps, sampler=sampler, eta=eta,
                                          rng=jax.random.key(12)))(noise)
  np.testing.assert_allclose(got, x, atol=1e-5)


@pytest.mark.parametrize('sampler,eta,steps', [('ddim', 0.0, 250), ('ddim', 1.0, 1000), ('ancestral', 0.0, 1000)])
def test_sampler_reproduces_a_gaussian(sampler, eta, steps):
  """With the exact denoiser of N(mu, s**2) data the samples must have mean mu and std s.

  The bound covers the statistical error (std ~5e-4 at n = 1e5) plus the first-order discretisation error, which
  shrinks the std by ~1% at these step counts (measured: 4% at 50 DDIM steps, falling as 1/steps).
  """
  mu, s, n = 0.3, 0.2, 100_000

  def posterior_v(z, logsnr):
    alpha, sigma = schedules.alpha_sigma(losses.broadcast_batch(logsnr, z))
    x_mean = mu + alpha * s**2 / (alpha**2 * s**2 + sigma**2) * (z - alpha * mu)  # E[x | z]
    return (alpha * z - x_mean) / sigma

  noise = jax.random.normal(jax.random.key(13), (n, 1))
  x = np.asarray(samplers.sample(posterior_v, noise, schedule=SCHEDULE, steps=steps, sampler=sampler, eta=eta,
                                 rng=jax.random.key(14)))
  assert abs(x.mean() - mu) < 3e-3
  assert abs(x.std() - s) < 5e-3


# Guidance.


def fake_text_model(calls):
  def denoise_with_text(z, logsnr, text):
    calls.append(z.shape[0])
    embedding = jnp.sum(text['emb'] * text['mask'], axis=1)
    return z * losses.broadcast_batch(embedding, z) + losses.broadcast_batch(logsnr, z)
  return denoise_with_text


def test_guidance_scale_one_is_the_conditional_model_alone():
  calls = []
  model = fake_text_model(calls)
  cond = {'emb': jnp.arange(12.0).reshape(3, 4), 'mask': jnp.ones((3, 4))}
  uncond = {'emb': jnp.zeros((3, 4)), 'mask': jnp.zeros((3, 4))}
  z, logsnr = jnp.asarray(normal(5, VIDEO_SHAPE), jnp.float32), jnp.array([-3.0, 0.0, 3.0])
  got = guidance.classifier_free_guidance(model, cond, uncond, 1.0)(z, logsnr)
  assert calls == [3]
  np.testing.assert_array_equal(got, model(z, logsnr, cond))


def test_guidance_formula_with_one_doubled_call():
  calls = []
  model = fake_text_model(calls)
  cond = {'emb': jnp.arange(12.0).reshape(3, 4), 'mask': jnp.ones((3, 4))}
  uncond = {'emb': jnp.full((3, 4), 0.5), 'mask': jnp.zeros((3, 4)).at[:, 0].set(1.0)}
  z, logsnr = jnp.asarray(normal(6, VIDEO_SHAPE), jnp.float32), jnp.array([-3.0, 0.0, 3.0])
  got = guidance.classifier_free_guidance(model, cond, uncond, 4.0)(z, logsnr)
  assert calls == [6]
  v_cond, v_uncond = (np.asarray(model(z, logsnr, text), np.float64) for text in (cond, uncond))
  np.testing.assert_allclose(got, v_uncond + 4.0 * (v_cond - v_uncond), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('percentile', [0.5, 0.9, 0.995])
def test_dynamic_threshold_matches_numpy(percentile):
  x0 = normal(7, VIDEO_SHAPE) * np.array([3.0, 1.2, 0.3]).reshape(3, 1, 1, 1, 1)
  got = guidance.dynamic_threshold(jnp.asarray(x0, jnp.float32), percentile)
  np.testing.assert_allclose(got, np_dynamic_threshold(x0, percentile), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[2], x0[2], rtol=1e-5)  # small example: s = 1, left alone
  assert np.abs(np.asarray(got)).max() <= 1.0


# Argument checks.


@pytest.mark.parametrize('kwargs,field', [
    (dict(sampler='euler'), 'sample.sampler'),
    (dict(steps=0), 'sample.steps'),
    (dict(eta=1.5), 'sample.eta'),
    (dict(eta=-0.1), 'sample.eta'),
    (dict(dynamic_threshold=1.0), 'sample.dynamic_threshold'),
    (dict(dynamic_threshold=-0.5), 'sample.dynamic_threshold'),
    (dict(sampler='ancestral', rng=None), 'rng'),
    (dict(eta=0.5, rng=None), 'rng'),
])
def test_sample_rejects_bad_arguments(kwargs, field):
  args = dict(schedule=SCHEDULE, steps=2, rng=jax.random.key(0)) | kwargs
  with pytest.raises(ValueError, match=re.escape(field)):
    samplers.sample(lambda z, logsnr: z, jnp.zeros((2, 3)), **args)


def test_schedule_rejects_inverted_range():
  with pytest.raises(ValueError, match='diffusion.logsnr_min'):
    schedules.Schedule(5.0, -5.0, 0.0)
