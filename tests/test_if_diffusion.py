"""DeepFloyd IF's diffusion: discrete squaredcos_cap_v2 schedule, eps + learned-range variance, hybrid loss, DDPM
sampler and guidance, against diffusers' DDPMScheduler (test-only dependency) and float64 NumPy references."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax import config as config_lib
from lumiere_jax.diffusion import checks
from lumiere_jax.diffusion import diffusers_scheduler
from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import parameterization
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion import schedules
from lumiere_jax.diffusion import superres
from lumiere_jax.diffusion import vlb

torch = pytest.importorskip('torch')
scheduling_ddpm = pytest.importorskip('diffusers.schedulers.scheduling_ddpm')

SCHEDULE = schedules.DiscreteSchedule()
IF = parameterization.IF
IMAGE_SHAPE = (2, 8, 8, 3)  # (B, H, W, C), channels last
# DDPMScheduler settings of IF's published pipelines (diffusers' scripts/convert_if.py); timestep_spacing and
# steps_offset are the defaults, 'leading' and 0.
IF_STAGE_I = dict(variance_type='learned_range', beta_schedule='squaredcos_cap_v2', prediction_type='epsilon',
                  thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.5)
IF_STAGE_II = dict(IF_STAGE_I, sample_max_value=1.0)


def np_betas(T=1000):
  """improved DDPM's cosine betas, written from the paper (eq. 17), float64."""
  f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
  return np.array([min(1 - f(k + 1) / f(k), 0.999) for k in range(T)])


# Schedule.


def test_schedule_arrays_equal_diffusers():
  reference = scheduling_ddpm.DDPMScheduler(beta_schedule='squaredcos_cap_v2')
  np.testing.assert_array_equal(SCHEDULE.betas.astype(np.float32), reference.betas.numpy())
  reference_abar = reference.alphas_cumprod.numpy()
  np.testing.assert_allclose(SCHEDULE.alphas_cumprod[:-1].astype(np.float32), reference_abar[:-1], rtol=2e-6)
  # The last beta is the 0.999 cap, where diffusers' float32 1 - beta is 1.00005e-3: its last abar is off by 1.3e-5
  # relative, ours (float64 throughout, as improved DDPM) is not. Emulating that rounding gives diffusers' value.
  assert SCHEDULE.alphas_cumprod[-1] == pytest.approx(reference_abar[-1], rel=2e-5)
  emulated = SCHEDULE.alphas_cumprod[-2] * np.float64(np.float32(1) - np.float32(SCHEDULE.betas[-1]))
  assert emulated == pytest.approx(reference_abar[-1], rel=2e-6)
  np.testing.assert_allclose(SCHEDULE.betas, np_betas(), rtol=1e-12)
  abar = np.cumprod(1 - np_betas())
  logsnr = np.asarray(SCHEDULE.logsnr_at(jnp.arange(-1, 1000)))
  assert logsnr[0] == np.inf and np.all(np.diff(logsnr) < 0)
  np.testing.assert_allclose(logsnr[1:], np.log(abar / (1 - abar)), rtol=1e-6)
  alpha, sigma = schedules.alpha_sigma(jnp.asarray(logsnr[1:]))
  np.testing.assert_allclose(np.asarray(alpha) ** 2, abar, rtol=2e-6)
  np.testing.assert_allclose(np.asarray(sigma) ** 2, 1 - abar, rtol=2e-6)


def test_timesteps_of_times_and_model_input():
  t = jnp.array([0.0, 0.0004, 0.001, 0.1, 0.5, 0.9, 0.9995, 1.0])
  expected = [0, 0, 0, 99, 499, 899, 999, 999]
  np.testing.assert_array_equal(SCHEDULE.timestep(t), expected)
  assert SCHEDULE.model_input(t).dtype == jnp.int32
  np.testing.assert_array_equal(SCHEDULE.model_input(t), expected)
  np.testing.assert_array_equal(SCHEDULE.logsnr(t), SCHEDULE.logsnr_at(jnp.array(expected)))


def test_training_timesteps_are_uniform_and_stratified():
  batch = 16
  for seed in range(3):
    t = SCHEDULE.training_times(losses.stratified_uniform(jax.random.key(seed), batch))
    k = np.asarray(SCHEDULE.timestep(t))
    np.testing.assert_allclose(np.asarray(t), (k + 1) / 1000, rtol=1e-6)
    assert k.min() >= 0 and k.max() <= 999
    assert len(np.unique(k * batch // 1000)) == batch  # one timestep per stratum of 1000 / batch


@pytest.mark.parametrize('spacing', schedules.SPACINGS)
@pytest.mark.parametrize('steps', [1, 7, 10, 100, 1000])
def test_inference_timesteps_equal_diffusers(spacing, steps):
  reference = scheduling_ddpm.DDPMScheduler(beta_schedule='squaredcos_cap_v2', timestep_spacing=spacing)
  reference.set_timesteps(steps)
  timesteps, previous = SCHEDULE.inference_timesteps(steps, spacing)
  np.testing.assert_array_equal(timesteps, reference.timesteps.numpy())
  np.testing.assert_array_equal(previous, [int(reference.previous_timestep(t)) for t in reference.timesteps])


# Parameterization, guidance, thresholding.


def test_eps_conversion_round_trips():
  x, eps = (np.random.default_rng(seed).standard_normal(IMAGE_SHAPE) for seed in (0, 1))
  logsnr = SCHEDULE.logsnr_at(jnp.array([3, 700]))
  z = losses.add_noise(jnp.asarray(x, jnp.float32), jnp.asarray(eps, jnp.float32), logsnr)
  np.testing.assert_allclose(IF.x0(z, jnp.asarray(eps, jnp.float32), logsnr), x, atol=2e-4)
  np.testing.assert_array_equal(IF.target(x, eps, logsnr), eps)
  assert IF.output_channels(3) == 6 and parameterization.V.output_channels(3) == 3
  prediction, values = IF.split(jnp.arange(12.0).reshape(1, 2, 6), jnp.zeros((1, 2, 3)))
  np.testing.assert_array_equal(values, jnp.arange(12.0).reshape(1, 2, 6)[..., 3:])
  assert prediction.shape == values.shape == (1, 2, 3)
  with pytest.raises(ValueError, match=r"diffusion.variance='learned_range' needs \(1, 2, 6\)"):
    IF.split(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2, 3)))


def test_learned_variance_guidance_keeps_the_text_branch_variance():
  def model(z, level, text):
    scale = text['c'].reshape(-1, 1, 1, 1)
    return jnp.concatenate([z * scale + level.reshape(-1, 1, 1, 1), jnp.tanh(z - scale)], axis=-1)

  z = jax.random.normal(jax.random.key(0), IMAGE_SHAPE)
  level = jnp.array([10, 500])
  cond, uncond = {'c': jnp.array([2.0, 3.0])}, {'c': jnp.zeros(2)}
  got = guidance.classifier_free_guidance(model, cond, uncond, 7.0, learned_variance=True)(z, level)
  out_c, out_u = model(z, level, cond), model(z, level, uncond)
  np.testing.assert_allclose(got[..., :3], out_u[..., :3] + 7.0 * (out_c[..., :3] - out_u[..., :3]), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(got[..., 3:], out_c[..., 3:])
  one = guidance.classifier_free_guidance(model, cond, uncond, 1.0, learned_variance=True)(z, level)
  np.testing.assert_array_equal(one, out_c)


@pytest.mark.parametrize('max_value', [1.0, 1.5])
def test_dynamic_threshold_cap_matches_numpy(max_value):
  x0 = np.random.default_rng(2).standard_normal(IMAGE_SHAPE) * np.array([3.0, 1.2]).reshape(2, 1, 1, 1)
  s = np.clip(np.quantile(np.abs(x0).reshape(2, -1), 0.95, axis=1), 1.0, max_value).reshape(2, 1, 1, 1)
  got = guidance.dynamic_threshold(jnp.asarray(x0, jnp.float32), 0.95, max_value)
  np.testing.assert_allclose(got, np.clip(x0, -s, s) / s, rtol=1e-5, atol=1e-6)


# DDPM sampling against diffusers.


def toy_model(xp, z, timestep, c):
  """A fixed 6-channel stand-in for IF's U-Net (eps, then learned-range values in (-1, 1)), channels last; the same
  code for jax.numpy and torch. `timestep` and the text constant `c` are per example."""
  shape = (-1,) + (1,) * (z.ndim - 1)
  t, c = xp.reshape(timestep, shape) * 1.0, xp.reshape(c, shape)
  weights = xp.asarray([1.0, 0.8, 1.2])
  eps = xp.tanh(1.5 * z + 0.3 * xp.cos(t / 150.0)) * weights * (1.0 + 0.2 * c)
  values = xp.tanh(0.7 * z - 0.5 + t / 1000.0 + 0.3 * c)
  return xp.concatenate([eps, values], -1)


def diffusers_loop(config, noise, step_noise, steps, scale, monkeypatch):
  """IF's denoising loop (pipeline_if.py) by hand over diffusers' DDPMScheduler, the step noise taken in order from
  `step_noise`. Arrays are channels last here, NCHW inside diffusers."""
  to_torch = lambda a: torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
  queue = [to_torch(n) for n in step_noise]
  monkeypatch.setattr(scheduling_ddpm, 'randn_tensor', lambda shape, **_: queue.pop(0))
  scheduler = scheduling_ddpm.DDPMScheduler(**config)
  scheduler.set_timesteps(steps)
  batch = noise.shape[0]
  sample = to_torch(noise)
  model = lambda x, t, c: toy_model(torch, x.permute(0, 2, 3, 1), t, c).permute(0, 3, 1, 2)  # noqa: E731
  for t in scheduler.timesteps:
    if scale == 1:
      output = model(sample, t.repeat(batch), torch.ones(batch))
    else:
      uncond, text = model(torch.cat([sample] * 2), t.repeat(2 * batch),
                           torch.cat([torch.zeros(batch), torch.ones(batch)])).chunk(2)
      eps_uncond, _ = uncond.split(3, dim=1)
      eps_text, variance = text.split(3, dim=1)
      output = torch.cat([eps_uncond + scale * (eps_text - eps_uncond), variance], dim=1)
    sample = scheduler.step(output, t, sample).prev_sample
  assert not queue  # every step but the one at timestep 0 drew noise
  return sample.permute(0, 2, 3, 1).numpy()


def sampler_settings(config):
  """Our schedule, parameterization and `samplers.sample` arguments for a DDPMScheduler config, read the way a
  pipeline's scheduler_config.json would be (through `diffusers_scheduler.settings`)."""
  scheduler = scheduling_ddpm.DDPMScheduler(**config)
  got = diffusers_scheduler.settings(json.loads(scheduler.to_json_string()))
  return dict(schedule=schedules.DiscreteSchedule(got['diffusion.num_timesteps']), sampler=got['sample.sampler'],
              parameterization=parameterization.Parameterization(got['diffusion.parameterization'],
                                                                 got['diffusion.variance']),
              spacing=got['sample.timestep_spacing'], dynamic_threshold=got['sample.dynamic_threshold'],
              dynamic_threshold_max=got['sample.dynamic_threshold_max'])


def test_if_scheduler_config_maps_to_our_settings():
  assert sampler_settings(IF_STAGE_I) == dict(schedule=SCHEDULE, sampler='ddpm', parameterization=IF,
                                              spacing='leading', dynamic_threshold=0.95, dynamic_threshold_max=1.5)
  assert sampler_settings(IF_STAGE_II)['dynamic_threshold_max'] == 1.0
  with pytest.raises(ValueError, match=r"prediction_type='sample' .*steps_offset=1"):
    diffusers_scheduler.settings(dict(IF_STAGE_I, prediction_type='sample', steps_offset=1))
  with pytest.raises(ValueError, match='beta_schedule'):
    diffusers_scheduler.settings({})


@pytest.mark.parametrize('config,scale', [
    (IF_STAGE_I, 7.0), (IF_STAGE_I, 1.0), (IF_STAGE_II, 4.0), (dict(IF_STAGE_I, timestep_spacing='trailing'), 7.0)])
def test_ddpm_sampling_equals_diffusers(config, scale, monkeypatch):
  """Ten steps; measured max |difference| 1.5e-5 ('leading', from diffusers' float32 1 - abar at timestep 0) and
  7e-7 ('trailing'); keeping the unconditional branch's variance instead moves the result by ~0.08, dropping the
  1.5 cap by ~0.13."""
  steps, rng = 10, jax.random.key(3)
  noise = jax.random.normal(jax.random.key(4), IMAGE_SHAPE)
  step_noise = [np.asarray(jax.random.normal(jax.random.fold_in(rng, i), IMAGE_SHAPE)) for i in range(steps)]
  denoise = guidance.classifier_free_guidance(lambda z, level, text: toy_model(jnp, z, level, text['c']),
                                              {'c': jnp.ones(2)}, {'c': jnp.zeros(2)}, scale, learned_variance=True)
  got = jax.jit(lambda n: samplers.sample(denoise, n, steps=steps, rng=rng, **sampler_settings(config)))(noise)
  trailing = config.get('timestep_spacing') == 'trailing'
  used = step_noise if trailing else step_noise[:-1]  # diffusers draws none at timestep 0
  ref = diffusers_loop(config, noise, used, steps, scale, monkeypatch)
  np.testing.assert_allclose(got, ref, atol=1e-4)
  assert np.abs(ref).max() > 0.5


@pytest.mark.parametrize('eta', [0.0, 1.0])
def test_ddim_on_the_discrete_schedule_equals_diffusers_ddim(eta):
  """Our uniform grid on 1000 steps is diffusers' 'trailing' spacing (999, 899, ..., 99); eps recomputed from the
  thresholded x0 is its `use_clipped_model_output`."""
  steps, rng = 10, jax.random.key(7)
  noise = jax.random.normal(jax.random.key(8), IMAGE_SHAPE)
  step_noise = [np.array(jax.random.normal(jax.random.fold_in(rng, i), IMAGE_SHAPE)) for i in range(steps)]
  model = lambda z, level: toy_model(jnp, z, level, jnp.ones(z.shape[0]))  # noqa: E731
  got = samplers.sample(model, noise, schedule=SCHEDULE, steps=steps, sampler='ddim', eta=eta, rng=rng,
                        parameterization=IF, dynamic_threshold=0.95, dynamic_threshold_max=1.5)
  ddim = pytest.importorskip('diffusers.schedulers.scheduling_ddim')
  scheduler = ddim.DDIMScheduler(beta_schedule='squaredcos_cap_v2', timestep_spacing='trailing', thresholding=True,
                                 dynamic_thresholding_ratio=0.95, sample_max_value=1.5)
  scheduler.set_timesteps(steps)
  to_torch = lambda a: torch.from_numpy(np.array(a)).permute(0, 3, 1, 2)  # noqa: E731
  sample = to_torch(noise)
  for i, t in enumerate(scheduler.timesteps):
    eps = toy_model(torch, sample.permute(0, 2, 3, 1), t.repeat(2), torch.ones(2))[..., :3].permute(0, 3, 1, 2)
    sample = scheduler.step(eps, t, sample, eta=eta, use_clipped_model_output=True,
                            variance_noise=to_torch(step_noise[i])).prev_sample
  np.testing.assert_allclose(got, sample.permute(0, 2, 3, 1).numpy(), atol=1e-4)


@pytest.mark.parametrize('sampler', ['ddim', 'ancestral', 'ddpm'])
def test_eps_oracle_recovers_data_on_the_discrete_schedule(sampler):
  x = jnp.asarray(np.random.default_rng(4).uniform(-0.99, 0.99, IMAGE_SHAPE), jnp.float32)
  seen = []

  def oracle(z, timestep):
    seen.append(timestep.dtype)
    alpha, sigma = schedules.alpha_sigma(losses.broadcast_batch(SCHEDULE.logsnr_at(timestep), z))
    return jnp.concatenate([(z - alpha * x) / sigma, jnp.zeros_like(z)], axis=-1)

  noise = jax.random.normal(jax.random.key(5), IMAGE_SHAPE)
  got = jax.jit(lambda n: samplers.sample(oracle, n, schedule=SCHEDULE, steps=10, sampler=sampler, parameterization=IF,
                                          rng=jax.random.key(6)))(noise)
  np.testing.assert_allclose(got, x, atol=2e-4)
  assert seen == [jnp.int32]


def test_learned_range_variance_matches_numpy():
  """The step's log variance from the values: -1 gives the posterior variance, +1 the step's beta."""
  abar = np.cumprod(1 - np_betas())
  t, s = np.array([999, 500, 37]), np.array([899, 300, 36])
  values = np.array([-1.0, 0.3, 1.0]).reshape(3, 1)
  beta = 1 - abar[t] / abar[s]
  posterior = (1 - abar[s]) / (1 - abar[t]) * beta
  frac = (values[:, 0] + 1) / 2
  ref = frac * np.log(beta) + (1 - frac) * np.log(posterior)
  got = samplers.learned_range_log_variance(jnp.asarray(values, jnp.float32), SCHEDULE.logsnr_at(jnp.asarray(t)),
                                            SCHEDULE.logsnr_at(jnp.asarray(s)))
  np.testing.assert_allclose(np.asarray(got)[:, 0], ref, rtol=1e-4)


# The hybrid loss against float64 NumPy (improved DDPM's formulas, written again here).


def np_tables():
  betas = np_betas()
  abar = np.cumprod(1 - betas)
  abar_prev = np.append(1.0, abar[:-1])
  posterior = betas * (1 - abar_prev) / (1 - abar)
  return dict(abar=abar, log_beta=np.log(betas), log_posterior=np.log(np.append(posterior[1], posterior[1:])),
              c1=betas * np.sqrt(abar_prev) / (1 - abar), c2=(1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar))


def np_vb_bits(x, z, eps_pred, values, k):
  """L_k per example in bits per dimension: KL(q || p) for k > 0, discretised-Gaussian decoder NLL at k = 0."""
  tab = {name: a[k].reshape(-1, *(1,) * (x.ndim - 1)) for name, a in np_tables().items()}
  x0 = (z - np.sqrt(1 - tab['abar']) * eps_pred) / np.sqrt(tab['abar'])
  true_mean, mean = tab['c1'] * x + tab['c2'] * z, tab['c1'] * x0 + tab['c2'] * z
  frac = (values + 1) / 2
  log_var = frac * tab['log_beta'] + (1 - frac) * tab['log_posterior']
  true_log_var = tab['log_posterior']
  kl = 0.5 * (log_var - true_log_var + np.exp(true_log_var - log_var) - 1 + (true_mean - mean) ** 2 / np.exp(log_var))
  cdf = lambda u: 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u**3)))  # noqa: E731
  std = np.exp(0.5 * log_var)
  upper, lower = cdf((x - mean + 1 / 255) / std), cdf((x - mean - 1 / 255) / std)
  prob = np.where(x < -0.999, upper, np.where(x > 0.999, 1 - lower, upper - lower))
  nll = -np.log(np.maximum(prob, 1e-12))
  axes = tuple(range(1, x.ndim))
  return np.where(k == 0, nll.mean(axis=axes), kl.mean(axis=axes)) / np.log(2)


def test_variance_term_matches_numpy_including_the_decoder_at_timestep_0():
  rng = np.random.default_rng(7)
  k = np.array([0, 0, 1, 250, 998, 999])
  shape = (len(k), 4, 4, 3)
  x = np.round(rng.uniform(-1, 1, shape) * 127.5) / 127.5  # 256 levels, with values at -1 and 1
  x[:, 0, 0] = -1.0
  x[:, 0, 1] = 1.0
  eps, eps_pred, values = rng.standard_normal(shape), rng.standard_normal(shape), rng.uniform(-1, 1, shape)
  eps_pred[0] = eps[0] + 0.01 * eps_pred[0]  # a nearly right model at timestep 0: the NLL's bins matter
  abar = np_tables()['abar'][k].reshape(-1, 1, 1, 1)
  z = np.sqrt(abar) * x + np.sqrt(1 - abar) * eps
  logsnr = SCHEDULE.logsnr_at(jnp.asarray(k))
  args = [jnp.asarray(a, jnp.float32) for a in (x, z, eps_pred, values)]
  got = vlb.variance_term(SCHEDULE, args[0], args[1], IF.x0(args[1], args[2], logsnr), args[3], jnp.asarray(k))
  ref = np_vb_bits(x, z, eps_pred, values, k)
  np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-5)
  assert np.all(ref > 0) and ref[0] != ref[1]


def if_toy_output(z, timestep):
  """6 channels: an imperfect eps and learned-range values depending on z and t (numpy or jax.numpy alike)."""
  xp = jnp if isinstance(z, jax.Array) else np
  t = xp.reshape(timestep, (-1, 1, 1, 1)) / 1000.0
  return xp.concatenate([0.5 * z + 0.1, xp.tanh(z + t - 0.5)], axis=-1)


def test_hybrid_loss_matches_numpy():
  rng = np.random.default_rng(8)
  x = np.round(rng.uniform(-1, 1, (8, 4, 4, 3)) * 127.5) / 127.5
  seen = {}

  def model(z, timestep):
    seen.update(z=np.asarray(z, np.float64), k=np.asarray(timestep))
    return if_toy_output(z, timestep)

  loss, aux = losses.diffusion_loss(model, jnp.asarray(x, jnp.float32), jax.random.key(9), SCHEDULE, IF)
  z, k = seen['z'], seen['k']
  np.testing.assert_array_equal(k, np.asarray(SCHEDULE.timestep(aux['t'])))
  abar = np_tables()['abar'][k].reshape(-1, 1, 1, 1)
  eps = (z - np.sqrt(abar) * x) / np.sqrt(1 - abar)
  output = if_toy_output(z, k.astype(np.float64))
  mse = np.mean((output[..., :3] - eps) ** 2, axis=(1, 2, 3))
  vb = np_vb_bits(x, z, output[..., :3], output[..., 3:], k)
  np.testing.assert_allclose(aux['mse'], mse, rtol=1e-3)
  np.testing.assert_allclose(aux['vb'], vb, rtol=2e-3, atol=1e-5)
  np.testing.assert_allclose(aux['loss'], mse + 0.001 * 1000 * vb, rtol=2e-3)  # lambda T L_t, lambda = 0.001
  assert float(loss) == pytest.approx(float(np.mean(mse + vb)), rel=2e-3) and np.all(vb > 0)


def test_variance_term_trains_the_variance_only():
  x = jnp.asarray(np.random.default_rng(10).uniform(-1, 1, (4, 4, 4, 3)), jnp.float32)

  def loss_parts(eps_scale, values_scale):
    def model(z, timestep):
      out = if_toy_output(z, timestep)
      return jnp.concatenate([eps_scale * out[..., :3], values_scale * out[..., 3:]], axis=-1)
    _, aux = losses.diffusion_loss(model, x, jax.random.key(11), SCHEDULE, IF)
    return aux['mse'].mean(), aux['vb'].mean(), aux['loss'].mean()

  grads = [jax.grad(lambda a, b, part=part: loss_parts(a, b)[part], argnums=(0, 1))(1.0, 0.7) for part in range(3)]
  (mse_eps, mse_values), (vb_eps, vb_values), (total_eps, total_values) = grads
  assert float(vb_eps) == 0.0 and float(mse_values) == 0.0
  assert abs(float(vb_values)) > 1e-6 and abs(float(mse_eps)) > 1e-4
  np.testing.assert_allclose([total_eps, total_values], [mse_eps, vb_values], rtol=1e-5)


# Configuration and argument checks.


def test_from_config_builds_each_kind():
  config = config_lib.load('stage=base,size=tiny').diffusion
  config.unlock()
  assert schedules.from_config(config) == schedules.Schedule(-15.0, 15.0, 0.0)
  assert parameterization.Parameterization.from_config(config) == parameterization.V
  config.update(schedule='squaredcos_cap_v2', parameterization='eps', variance='learned_range')
  assert schedules.from_config(config) == SCHEDULE
  assert parameterization.Parameterization.from_config(config) == IF
  config.schedule = 'linear'
  with pytest.raises(ValueError, match='diffusion.schedule'):
    schedules.from_config(config)


@pytest.mark.parametrize('kwargs,field', [
    (dict(prediction='x0'), 'diffusion.parameterization'),
    (dict(variance='learned'), 'diffusion.variance'),
    (dict(vlb_weight=-1.0), 'diffusion.vlb_weight'),
])
def test_parameterization_rejects_bad_fields(kwargs, field):
  with pytest.raises(ValueError, match=field):
    parameterization.Parameterization(**kwargs)


def test_learned_variance_and_ddpm_need_the_discrete_schedule():
  cosine = schedules.Schedule(-15.0, 15.0, 0.0)
  with pytest.raises(ValueError, match='diffusion.variance'):
    losses.diffusion_loss(lambda z, level: jnp.concatenate([z, z], -1), jnp.zeros(IMAGE_SHAPE), jax.random.key(0),
                          cosine, IF)
  with pytest.raises(ValueError, match="sample.sampler='ddpm'"):
    samplers.sample(lambda z, level: z, jnp.zeros(IMAGE_SHAPE), schedule=cosine, steps=2, sampler='ddpm',
                    rng=jax.random.key(0))
  with pytest.raises(ValueError, match='sample.dynamic_threshold_max'):
    samplers.sample(lambda z, level: z, jnp.zeros(IMAGE_SHAPE), schedule=SCHEDULE, steps=2, dynamic_threshold=0.9,
                    dynamic_threshold_max=0.5)
  with pytest.raises(ValueError, match='sample.timestep_spacing'):
    SCHEDULE.inference_timesteps(10, 'even')
  with pytest.raises(ValueError, match='sample.steps'):
    SCHEDULE.inference_timesteps(1001)


def test_superres_augment_reports_the_timestep_on_the_discrete_schedule():
  condition = jnp.ones((4, 2, 4, 4, 3))
  noised, level = superres.augment(condition, jax.random.key(0), SCHEDULE, max_time=0.25)
  assert level.dtype == jnp.int32 and np.all((np.asarray(level) >= 0) & (np.asarray(level) < 250))
  alpha, _ = schedules.alpha_sigma(SCHEDULE.logsnr_at(level))
  np.testing.assert_allclose(jnp.mean(noised, axis=(1, 2, 3, 4)), alpha, atol=0.5)


def test_config_checks_name_the_fields_of_if_diffusion():
  config = config_lib.with_overrides(config_lib.load('stage=base,size=tiny'), {
      'diffusion.variance': 'learned_range', 'diffusion.vlb_weight': -1.0, 'sample.sampler': 'ddpm',
      'sample.steps': 2000, 'sample.dynamic_threshold': 0.95, 'sample.dynamic_threshold_max': 0.5,
      'sample.timestep_spacing': 'even'})
  config.unlock()
  assert {field for field, _ in checks.config_errors(config)} == {
      'diffusion.variance', 'diffusion.vlb_weight', 'sample.sampler', 'sample.dynamic_threshold_max',
      'sample.timestep_spacing'}
  config.diffusion.update(schedule='squaredcos_cap_v2', parameterization='eps', vlb_weight=0.001)
  config.sample.update(dynamic_threshold_max=1.5, timestep_spacing='leading')
  assert [field for field, _ in checks.config_errors(config)] == ['sample.steps']
  config.sample.steps = 100
  assert not list(checks.config_errors(config))
