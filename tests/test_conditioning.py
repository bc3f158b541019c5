"""The U-Net's conditioning input (SSR's low-res clip, the conditional stage's masked video): shapes and errors."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from lumiere_jax.models.unet import UNet
from micro import micro_config

FRAMES, SIZE, TEXT = 4, 16, 32


def unet(cond_channels=0, cond_noise_level=False) -> UNet:
  config = micro_config('base', **{'model.cond_channels': cond_channels, 'model.cond_noise_level': cond_noise_level})
  return UNet(config.model, TEXT, inflate=True, rngs=nnx.Rngs(0))


def perturbed(model: UNet) -> UNet:
  """The model with noise on every parameter: zero-initialised FiLM and output layers hide inputs at init."""
  params = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  noisy = [p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, noisy))
  return model


def inputs(batch=2):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (batch, FRAMES, SIZE, SIZE, 3))
  text = jax.random.normal(keys[1], (batch, 5, TEXT))
  return x, jnp.linspace(-5, 5, batch), text, jnp.ones((batch, 5), bool)


def test_conditioning_video_and_its_noise_level_change_the_output():
  model = perturbed(unet(cond_channels=3, cond_noise_level=True))
  assert model.conv_in.kernel.shape[-2] == 6  # 3 noisy + 3 conditioning channels
  x, logsnr, text, mask = inputs()
  low = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  out = model(x, logsnr, text, mask, conditioning=low, conditioning_level=jnp.zeros(2))
  assert out.shape == x.shape and out.dtype == jnp.float32
  other_video = model(x, logsnr, text, mask, conditioning=-low, conditioning_level=jnp.zeros(2))
  other_level = model(x, logsnr, text, mask, conditioning=low, conditioning_level=jnp.full(2, 5.0))
  assert float(jnp.abs(out - other_video).max()) > 1e-3 and float(jnp.abs(out - other_level).max()) > 1e-3


def test_without_conditioning_the_model_is_unchanged():
  plain, conditioned = unet(), unet(cond_channels=3)
  assert plain.cond_noise_embed is None and plain.conv_in.kernel.shape[-2] == 3
  # Same spatial initialisation but for conv_in's extra input rows.
  assert jnp.array_equal(plain.conv_out.kernel[...], conditioned.conv_out.kernel[...])


@pytest.mark.parametrize('cond_channels, cond_noise_level, kwargs, message', [
    (0, False, dict(conditioning=jnp.zeros((2, FRAMES, SIZE, SIZE, 3))), r'expected \(2, 4, 16, 16, 0\)'),
    (3, False, {}, 'model.cond_channels=3: the model needs a conditioning video'),
    (3, False, dict(conditioning=jnp.zeros((2, FRAMES, 8, 8, 3))), r'conditioning of shape \(2, 4, 8, 8, 3\)'),
    (3, True, dict(conditioning=jnp.zeros((2, FRAMES, SIZE, SIZE, 3))), 'give conditioning_level'),
])
def test_conditioning_errors(cond_channels, cond_noise_level, kwargs, message):
  with pytest.raises(ValueError, match=message):
    unet(cond_channels, cond_noise_level)(*inputs(), **kwargs)
