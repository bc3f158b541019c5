"""The conditional stage: config, init from a base model (widened input), masks in the pipeline and the step, the
sampler keeping given pixels, SDEdit through `generate`, and the sampling modes' input files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from PIL import Image

from lumiere_jax import conditional, stages, validation
from lumiere_jax import config as config_lib
from lumiere_jax import sample as sample_lib
from lumiere_jax.data import masks, pipeline, video
from lumiere_jax.diffusion import schedules
from lumiere_jax.models import widen
from lumiere_jax.train import step as step_lib
from micro import initialised_from, micro_config, one_device_setup, trained_looking_params

flags.FLAGS.mark_as_parsed()  # grain reads absl flags; outside app.run they must be marked parsed
PROMPTS = ['a red circle moving right', 'a blue square moving left']


def test_conditional_config():
  config = config_lib.load('stage=conditional,size=tiny')
  validation.validate(config, num_devices=8, num_processes=1, training=False)  # init_from: the user's to give
  assert stages.of(config).conditioning_of(config) == stages.MASKED
  assert (config.model.cond_channels, config.model.cond_noise_level) == (4, False)
  assert config.train.trainable == 'conditional' and set(config.conditional.keys()) == set(masks.KINDS)
  zeros = micro_config('conditional', **{f'conditional.{kind}': 0.0 for kind in masks.KINDS})
  with pytest.raises(config_lib.ConfigError, match=r'config\.conditional: mask weights .* not all 0'):
    validation.validate(zeros, num_devices=1, num_processes=1)


@pytest.fixture(scope='module')
def base_params():
  """A trained-looking base model: its initial parameters, perturbed."""
  return trained_looking_params(micro_config('base'))


@pytest.fixture(scope='module')
def conditional_from_base(base_params):
  """(setup, inference params) of the conditional stage initialised from the base model."""
  return initialised_from(micro_config('conditional'), base_params)


def _run(spec, params, x, conditioning=None):
  text, mask = jax.random.normal(jax.random.PRNGKey(5), (2, 5, 32)), jnp.arange(5) < jnp.array([[3], [5]])
  return jax.jit(lambda p: spec.merge(p)(x, jnp.array([-2.0, 3.0]), text, mask, conditioning=conditioning))(params)


def test_at_init_the_conditional_model_is_the_base_model_for_any_conditioning(base_params, conditional_from_base):
  setup, params = conditional_from_base
  assert set(setup.trainable) == {k for k in params if 'temporal' in k or k.startswith('unet.conv_in.')}
  kernel = params[widen.INPUT_KERNEL]
  np.testing.assert_array_equal(kernel[..., :3, :], base_params[widen.INPUT_KERNEL])
  assert kernel.shape[-2] == 7 and not np.any(kernel[..., 3:, :])
  assert all(np.array_equal(params[k], base_params[k]) for k in params if k != widen.INPUT_KERNEL)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16, 16, 3))
  base = _run(one_device_setup(micro_config('base')).spec, base_params, x)
  for seed in (1, 2):
    conditioning = jax.random.normal(jax.random.PRNGKey(seed), (2, 8, 16, 16, 4)) * 3
    np.testing.assert_allclose(_run(setup.spec, params, x, conditioning), base, rtol=1e-5, atol=1e-5)
  live = {**params, widen.INPUT_KERNEL: kernel + 0.1}  # once the new rows train, the conditioning matters
  assert float(jnp.abs(_run(setup.spec, live, x, conditioning) - base).max()) > 1e-3


def test_init_from_a_checkpoint_of_another_stage_is_named(base_params):
  setup = one_device_setup(micro_config('conditional'))
  spatial_only = {k: v for k, v in base_params.items() if 'temporal' not in k}  # a t2i model
  with pytest.raises(ValueError, match=r'not a base-stage checkpoint .*missing \[.*temporal'):
    setup.init(spatial_only)
  widened = widen.widen_input_conv(base_params, setup.spec.shapes)
  with pytest.raises(ValueError, match=r'mis_shaped \[.unet\.conv_in\.kernel \(3, 3, 7, 16\)'):
    setup.init(widened)  # already a conditional model


@pytest.mark.parametrize('kind', ['i2v', 'cinemagraph'])
def test_pipeline_draws_masks_by_weight_and_makes_the_target(kind):
  config = micro_config('conditional', **{f'conditional.{k}': float(k == kind) for k in masks.KINDS})
  batch = next(pipeline.make_train_iterator(config))
  mask = batch['cond_mask']
  assert mask.dtype == np.uint8 and mask.shape == (4, 8, 16, 16, 1) and set(np.unique(mask)) <= {0, 1}
  if kind == 'i2v':
    assert mask[:, 0].all() and not mask[:, 1:].any()
  else:  # the still first frame outside the free box, on every frame
    given = np.broadcast_to(mask.astype(bool), batch['video'].shape)
    np.testing.assert_array_equal(batch['video'][given], np.broadcast_to(batch['video'][:, :1], given.shape)[given])
    assert mask.all(axis=1).any() and not mask.all()


def test_step_feeds_the_masked_video_and_the_mask():
  config = micro_config('conditional')
  rng = np.random.default_rng(0)
  video_in = rng.uniform(-1, 1, (2, 8, 16, 16, 3))
  mask = (rng.random((2, 8, 16, 16, 1)) < 0.5).astype(np.uint8)
  got = step_lib.conditioning_inputs(config, jnp.asarray(video_in, jnp.float32), jax.random.PRNGKey(0),
                                     schedules.Schedule.from_config(config.diffusion), jnp.asarray(mask))
  want = np.concatenate([video_in * mask, mask], axis=-1)  # float64 reference
  np.testing.assert_allclose(got['conditioning'], want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('mode', conditional.MODES)
def test_sampling_keeps_the_given_pixels(conditional_from_base, mode):
  setup, params = conditional_from_base
  rng = np.random.default_rng(1)
  still = rng.integers(0, 256, (16, 16, 3), np.uint8)
  clip = rng.integers(0, 256, (8, 16, 16, 3), np.uint8)
  region = np.zeros((8, 16, 16), bool)
  region[:, 4:12, 2:10] = True
  given, mask = conditional.given_clip(mode, 8, 16, image=still, clip=clip, region=region)
  config = micro_config('conditional')
  out = sample_lib.generate(setup.spec, params, config, PROMPTS, seed=2, given=(given, mask))
  keep = np.broadcast_to(mask[None] > 0, out.shape)
  assert out.shape == (2, 8, 16, 16, 3) and keep.any() and not keep.all()
  np.testing.assert_array_equal(out[keep], np.broadcast_to(given, out.shape)[keep])
  if mode != 'inpaint':
    np.testing.assert_array_equal(out[:, 0][keep[:, 0]], np.broadcast_to(still, out[:, 0].shape)[keep[:, 0]])


def test_sdedit_through_generate(base_params):
  config = micro_config('base')
  spec = one_device_setup(config).spec
  clip = np.random.default_rng(3).integers(0, 256, (8, 16, 16, 3), np.uint8)
  untouched = sample_lib.generate(spec, base_params, config, PROMPTS, seed=4, edit=clip, strength=0.0)
  np.testing.assert_array_equal(untouched, np.broadcast_to(clip, untouched.shape))
  plain = sample_lib.generate(spec, base_params, config, PROMPTS, seed=4)
  np.testing.assert_array_equal(sample_lib.generate(spec, base_params, config, PROMPTS, seed=4, edit=clip,
                                                    strength=1.0), plain)
  with pytest.raises(ValueError, match=r'strength=1.5 must be in \[0, 1\]'):
    sample_lib.generate(spec, base_params, config, PROMPTS, seed=4, edit=clip, strength=1.5)


def _write_png(path, array):
  Image.fromarray(array).save(path)
  return str(path)


def test_mode_inputs_from_files_and_their_errors(tmp_path):
  rng = np.random.default_rng(0)
  image = _write_png(tmp_path / 'in.png', rng.integers(0, 256, (16, 16, 3), np.uint8))
  region = np.zeros((16, 16), np.uint8)
  region[3:9, 5:13] = 255
  mask_png = _write_png(tmp_path / 'mask.png', region)
  clip, mask = conditional.read_inputs('cinemagraph', 8, 16, image=image, mask=mask_png)
  assert clip.shape == (8, 16, 16, 3) and np.array_equal(clip[5], np.asarray(Image.open(image)))
  assert mask[0].all()  # frame 0 is the image, given whole
  np.testing.assert_array_equal(mask[1:, ..., 0], np.broadcast_to(region == 0, (7, 16, 16)))
  moving = np.zeros((8, 16, 16, 3), np.uint8)
  for t in range(8):
    moving[t, 4:12, t:t + 8] = 255
  video.write_mp4(tmp_path / 'mask.mp4', moving, 16)
  video.write_mp4(tmp_path / 'in.mp4', rng.integers(0, 256, (9, 16, 16, 3), np.uint8), 16)
  clip, mask = conditional.read_inputs('inpaint', 8, 16, video=str(tmp_path / 'in.mp4'),
                                       mask=str(tmp_path / 'mask.mp4'))
  np.testing.assert_array_equal(mask[..., 0], moving[..., 0] < 128)  # per-frame mask, despite H.264's blur
  assert clip.shape == (8, 16, 16, 3)

  big = _write_png(tmp_path / 'big.png', rng.integers(0, 256, (20, 16, 3), np.uint8))
  grey = _write_png(tmp_path / 'grey.png', np.full((16, 16), 128, np.uint8))
  for mode, kwargs, message in [
      ('i2v', dict(image=big), r'big.png: the image is 16x20 pixels; this model makes 16x16 frames'),
      ('cinemagraph', dict(image=image, mask=grey), r'grey.png: not a binary mask: 256 pixels are neither black'),
      ('cinemagraph', dict(image=image), r'mode cinemagraph takes --image and --mask; --mask is missing'),
      ('i2v', dict(image=image, video=str(tmp_path / 'in.mp4')), '--video is not used by it'),
  ]:
    with pytest.raises(ValueError, match=message):
      conditional.read_inputs(mode, 8, 16, **kwargs)
  with pytest.raises(ValueError, match=r'the video has 9 frames; this model makes 16-frame clips'):
    conditional.read_clip(tmp_path / 'in.mp4', 16, 16)
