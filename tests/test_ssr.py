"""The SSR stage: configs, init from an image SR model, the windowed sampler, training and the cascade from the CLI."""

import subprocess
import sys

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax import config as config_lib
from lumiere_jax import stages, validation
from lumiere_jax import sample as sample_lib
from lumiere_jax.data import tokenizers, video
from lumiere_jax.diffusion import multidiffusion
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.train import checkpoint
from micro import initialised_from, micro_config, one_device_setup, perturbed, trained_looking_params
from test_cli import MICRO, ROOT, _env

# The micro shapes as a 16 -> 32 px super-resolution model: two levels, no temporal resampling, windows of 4.
SR = {'model.image_size': 32, 'model.channel_mults': (1, 2), 'model.attention_resolutions': (16,),
      'model.temporal_downsample': (False,), 'model.cond_channels': 3, 'model.cond_noise_level': True,
      'sr.factor': 2, 'sr.window': 4, 'sr.overlap': 2}
SR_FLAGS = ['--config.model.image_size=32', '--config.model.channel_mults=(1,2)',
            '--config.model.attention_resolutions=(16,)', '--config.model.temporal_downsample=(False,)',
            '--config.sr.factor=2', '--config.sr.window=4', '--config.sr.overlap=2']
SR_FLAGS += [flag for flag in MICRO if flag.split('=')[0] not in {f.split('=')[0] for f in SR_FLAGS}]
PROMPT = 'a red circle moving right'


def sr_config(stage='ssr', **overrides):
  """`stage=ssr` (or the image SR model, `stage=t2i`) at micro size."""
  return micro_config(stage, **{**SR, **overrides})


@pytest.mark.parametrize('size, high, low, window', [('tiny', 64, 16, 4), ('small', 256, 64, 9),
                                                     ('paper', 1024, 128, 15)])
def test_ssr_configs(size, high, low, window):
  config = config_lib.load(f'stage=ssr,size={size}')
  validation.validate(config, num_devices=8, num_processes=1, training=False)  # init_from: the user's to give
  assert (config.model.image_size, config.model.image_size // config.sr.factor, config.sr.window) == (high, low, window)
  assert config.sr.overlap == 2 and not any(config.model.temporal_downsample)
  # The default windows tile the clip with exactly `overlap` frames between neighbours (configs/lumiere.py).
  starts = multidiffusion.window_starts(config.model.num_frames, config.sr.window, config.sr.overlap)
  assert all(b - a == config.sr.window - config.sr.overlap for a, b in zip(starts, starts[1:]))
  assert starts[-1] + config.sr.window == config.model.num_frames
  assert stages.of(config).conditioning_of(config) == stages.SUPERRES and config.train.trainable == 'temporal'
  image_sr = config_lib.load(f'stage=t2i,size={size},sr=1')
  validation.validate(image_sr, num_devices=8, num_processes=1)
  assert image_sr.model.image_size == high and image_sr.train.trainable == 'unet'


@pytest.mark.parametrize('arg, overrides, field', [
    ('stage=ssr', dict(window=9), 'config.sr.window'),  # longer than model.num_frames = 8
    ('stage=ssr', dict(window=4, overlap=4), 'config.sr.overlap'),
    ('stage=ssr', dict(factor=3), 'config.sr.factor'),  # 64 px do not divide by 3
    ('stage=ssr', dict(sample_augment=1.5), 'config.sr.sample_augment'),
    ('stage=base', dict(factor=4), 'config.sr.factor'),
])
def test_bad_sr_config_names_the_field(arg, overrides, field):
  config = config_lib.load(f'{arg},size=tiny')
  config.sr.update(overrides)
  with pytest.raises(config_lib.ConfigError, match=field):
    validation.validate(config, num_devices=8, num_processes=1)


def test_ssr_refuses_temporal_resampling_and_a_missing_conditioning():
  config = config_lib.load('stage=ssr,size=tiny')
  config.model.temporal_downsample = (True, False, False)
  config.model.cond_channels = 0
  with pytest.raises(config_lib.ConfigError) as error:
    validation.validate(config, num_devices=8, num_processes=1)
  assert 'config.model.temporal_downsample' in str(error.value) and 'config.model.cond_channels' in str(error.value)
  with pytest.raises(ValueError, match='sr=.0.: stage ssr allows'):
    config_lib.load('stage=ssr,sr=0')


def test_windowed_per_frame_inputs_match_a_float64_reference():
  """Each window gets its own frames of a per-frame input; per-clip inputs are repeated."""
  rng = np.random.default_rng(0)
  z, video_in = rng.standard_normal((2, 7, 2, 2, 3)), rng.standard_normal((2, 7, 2, 2, 1))
  logsnr, scale = np.array([0.5, -1.0]), np.array([1.0, 2.0])

  def denoise(z, logsnr, context):  # mixes neighbouring frames, so every window's output differs
    mixed = z + context['video'] * jnp.roll(z, 1, axis=1)
    return (jnp.tanh(mixed) * context['scale'][:, None, None, None, None] + logsnr[:, None, None, None, None])[..., :2]

  wrapped = multidiffusion.windowed(denoise, num_frames=7, window=4, overlap=2,
                                    frame_inputs={'video': True, 'scale': False})
  got = wrapped(z.astype(np.float32), logsnr.astype(np.float32),
                {'video': video_in.astype(np.float32), 'scale': scale.astype(np.float32)})
  total, count = np.zeros((2, 7, 2, 2, 2)), np.zeros(7)
  for start in (0, 2, 3):
    part = slice(start, start + 4)
    mixed = z[:, part] + video_in[:, part] * np.roll(z[:, part], 1, axis=1)
    total[:, part] += (np.tanh(mixed) * scale[:, None, None, None, None] + logsnr[:, None, None, None, None])[..., :2]
    count[part] += 1
  assert got.shape == (2, 7, 2, 2, 2)  # the output's channels are v's, not z's
  np.testing.assert_allclose(got, total / count[None, :, None, None, None], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope='module')
def image_sr_params():
  """A trained-looking image SR model: its initial parameters, perturbed."""
  return trained_looking_params(sr_config('t2i'))


@pytest.fixture(scope='module')
def ssr_from_image_sr(image_sr_params):
  """(setup, inference params) of the SSR initialised from the image SR model."""
  return initialised_from(sr_config('ssr'), image_sr_params)


def test_ssr_at_init_reproduces_the_image_sr_model_frame_by_frame(image_sr_params, ssr_from_image_sr):
  setup, params = ssr_from_image_sr
  assert all('temporal' in k for k in setup.trainable)
  assert all(np.array_equal(params[k], image_sr_params[k]) for k in setup.frozen)
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  batch, frames, size = 2, 4, 32
  x = jax.random.normal(keys[0], (batch, frames, size, size, 3))
  condition = jax.random.normal(keys[1], x.shape)
  text, mask = jax.random.normal(keys[2], (batch, 5, 32)), jnp.arange(5) < jnp.array([[3], [5]])
  logsnr, condition_logsnr = jnp.array([-2.0, 3.0]), jnp.array([4.0, 1.0])

  def run(spec, params, x, logsnr, text, mask, condition, condition_logsnr):
    return jax.jit(lambda p: spec.merge(p)(x, logsnr, text, mask, conditioning=condition,
                                           conditioning_level=condition_logsnr))(params)

  ssr = run(setup.spec, params, x, logsnr, text, mask, condition, condition_logsnr)
  image_spec = one_device_setup(sr_config('t2i')).spec
  per_frame = lambda a: jnp.repeat(a, frames, axis=0)  # noqa: E731  every frame as a clip of its own
  one_frame = lambda a: a.reshape(batch * frames, 1, *a.shape[2:])  # noqa: E731
  image = run(image_spec, image_sr_params, one_frame(x), per_frame(logsnr), per_frame(text), per_frame(mask),
              one_frame(condition), per_frame(condition_logsnr)).reshape(x.shape)
  np.testing.assert_allclose(ssr, image, rtol=1e-5, atol=1e-5)
  trained = perturbed({k: v for k, v in params.items() if k in setup.trainable}, 0.1, seed=2)
  moved = run(setup.spec, {**params, **trained}, x, logsnr, text, mask, condition, condition_logsnr)
  assert float(jnp.abs(moved - ssr).max()) > 1e-3  # the temporal layers are live once trained


def _sampler_inputs(config, frames):
  tokens, mask = tokenizers.build_tokenizer(config.text).encode([PROMPT, ''])
  lowres = jax.random.uniform(jax.random.PRNGKey(3), (2, frames, 16, 16, 3), minval=-1, maxval=1)
  return jnp.asarray(tokens), jnp.asarray(mask), jax.random.PRNGKey(4), lowres


def test_one_window_covering_the_clip_is_plain_sampling_exactly(ssr_from_image_sr, monkeypatch):
  setup, params = ssr_from_image_sr
  params = {**params, **perturbed({k: params[k] for k in setup.trainable}, 0.1, seed=2)}  # temporal layers live
  config = sr_config('ssr', **{'sr.window': 6, 'sample.sampler': 'ancestral', 'sample.steps': 3})
  inputs = _sampler_inputs(config, frames=6)
  windowed = sample_lib.make_sampler(setup.spec, config)(params, *inputs)
  monkeypatch.setattr(multidiffusion, 'windowed', lambda denoise, **_: denoise)  # the same sampler, no windows
  plain = sample_lib.make_sampler(setup.spec, config)(params, *inputs)
  assert windowed.shape == (2, 6, 32, 32, 3)
  np.testing.assert_array_equal(windowed, plain)
  again = sample_lib.make_sampler(setup.spec, config)(params, *inputs)
  np.testing.assert_array_equal(again, plain)  # deterministic for a seed


def test_windows_spread_over_devices_give_the_same_clip(ssr_from_image_sr):
  setup, params = ssr_from_image_sr
  config = sr_config('ssr', **{'sample.steps': 2})  # 8 frames, windows of 4 overlapping by 2: 3 windows
  inputs = _sampler_inputs(config, frames=8)
  mesh = mesh_lib.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices()[:4])
  sampler = sample_lib.make_sampler(setup.spec, config, mesh=mesh)
  params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  hlo = sampler.compile(params, *inputs).step.as_text()  # a denoising step, after XLA's partitioning
  assert re.search(r'f32\[3,4,32,32,\d+\]', hlo), hlo[-3000:]  # per device: 3 of 12 windows (3 x 2 branches x 2)
  np.testing.assert_allclose(sampler(params, *inputs), sample_lib.make_sampler(setup.spec, config)(params, *inputs),
                             rtol=1e-4, atol=1e-4)  # float32 sums in another order


@pytest.mark.parametrize('shape, message', [
    ((1, 8, 12, 12, 3), r'upsamples \(N, frames, 16, 16, 3\) clips'),
    ((1, 8, 16, 16), r'low-res input of shape \(1, 8, 16, 16\)'),
    ((1, 3, 16, 16, 3), 'sr.window=4 is longer than the 3-frame clip'),
])
def test_bad_lowres_inputs_are_named(shape, message):
  with pytest.raises(ValueError, match=message):
    sample_lib.check_lowres(sr_config('ssr'), shape)


def _run(command, tmp_path):
  return subprocess.run([sys.executable, '-m', *command], cwd=ROOT, env=_env(tmp_path / 'data'), capture_output=True,
                        text=True, timeout=600)


def test_ssr_trains_from_the_command_line_and_the_cascade_writes_the_high_res_clip(tmp_path):
  train = _run(['lumiere_jax.cli.train', '--config', 'configs/lumiere.py:stage=ssr,size=tiny',
                '--workdir', str(tmp_path / 'ssr'), *SR_FLAGS, '--config.train.steps=2'], tmp_path)
  assert train.returncode == 0, train.stderr[-3000:]
  assert 'ssr model' in train.stdout and 'loss=' in train.stdout
  assert checkpoint.resolve(tmp_path / 'ssr')[1] == 2
  samples = list((tmp_path / 'ssr' / 'samples').glob('*/*.mp4'))
  assert samples and video.decode_video(samples[0].read_bytes())[0].shape == (8, 32, 32, 3)

  base = micro_config('base')  # an untrained base run is enough to drive the cascade
  setup = one_device_setup(base)
  saver = checkpoint.Checkpointer(tmp_path / 'base', async_save=False)
  saver.save(0, setup.init(), None, base)
  saver.close()
  out = tmp_path / 'cascade.mp4'
  cascade = _run(['lumiere_jax.cli.sample', '--workdir', str(tmp_path / 'base'), '--ssr-workdir', str(tmp_path / 'ssr'),
                  '--prompt', PROMPT, '--out', str(out), '--steps', '2'], tmp_path)
  assert cascade.returncode == 0, cascade.stderr[-3000:]
  frames, fps = video.decode_video(out.read_bytes())
  assert frames.shape == (8, 32, 32, 3) and fps == pytest.approx(16)

  lowres = tmp_path / 'low.mp4'
  video.write_mp4(lowres, np.random.default_rng(0).integers(0, 256, (8, 12, 12, 3), np.uint8), 16)
  wrong = _run(['lumiere_jax.cli.sample', '--ssr-workdir', str(tmp_path / 'ssr'), '--video', str(lowres),
                '--prompt', PROMPT, '--out', str(tmp_path / 'never.mp4')], tmp_path)
  assert wrong.returncode != 0 and 'upsamples (N, frames, 16, 16, 3) clips' in wrong.stderr
  assert not (tmp_path / 'never.mp4').exists()
