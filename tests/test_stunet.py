"""STUNet: clip-length rules, T2I equivalence at initialisation, temporal parameter paths, resamplers, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lumiere_jax import models
from lumiere_jax.models import stunet
from micro import micro_config
from test_models import base_flat, forward, inputs, perturb, spec_of, t2i_flat, init_rngs


def is_temporal(key: str) -> bool:
  return any(part.startswith('temporal') for part in key.split('.'))


@pytest.mark.parametrize('flags, frames', [((True, True), 8), ((True, True), 16), ((False, True), 6)])
def test_output_shapes_for_valid_clip_lengths(flags, frames):
  config = micro_config('base', **{'model.temporal_downsample': flags})
  spec = spec_of('base', **{'model.temporal_downsample': flags})
  x, logsnr, text, mask = inputs(config, frames, batch=1)
  out = jax.eval_shape(lambda p: spec.merge(p)(x, logsnr, text, mask), spec.shapes)
  assert (out.shape, out.dtype) == (x.shape, jnp.float32)


def test_invalid_clip_length_names_frames_and_divisor():
  config = micro_config('base')
  assert models.temporal_downsample_factor(config.model) == 4
  spec = spec_of('base')
  x, logsnr, text, mask = inputs(config, frames=6, batch=1)
  with pytest.raises(ValueError, match=r'num_frames=6 .* divisible by 4'):
    jax.eval_shape(lambda p: spec.merge(p)(x, logsnr, text, mask), spec.shapes)


def test_parameter_paths_are_t2i_plus_temporal():
  base, t2i = spec_of('base'), spec_of('t2i')
  temporal = {k for k in base.shapes if is_temporal(k)}
  assert temporal and not any(is_temporal(k) for k in t2i.shapes)
  assert set(base.shapes) == set(t2i.shapes) | temporal
  assert all(base.shapes[k] == t2i.shapes[k] for k in t2i.shapes)
  # Temporal layers draw from their own random stream: the STUNet's spatial init is the T2I init.
  t2i_init = models.build_model(micro_config('t2i'), rngs=init_rngs())
  for key, value in nnx.to_flat_state(nnx.state(t2i_init, nnx.Param)):
    np.testing.assert_array_equal(value.get_value(), base_flat()['.'.join(map(str, key))])


def test_initial_stunet_equals_t2i_on_every_2k_th_frame():
  config = micro_config('base')
  factor = models.temporal_downsample_factor(config.model)
  spatial = perturb(t2i_flat())  # any spatial weights: the property rests on the temporal init alone
  t2i = spec_of('t2i').merge(spatial)
  base = spec_of('base').merge({**base_flat(), **spatial})
  x, logsnr, text, mask = inputs(config, frames=config.model.num_frames)
  out = np.asarray(forward(base, x, logsnr, text, mask))
  for f in range(0, x.shape[1], factor):
    np.testing.assert_allclose(out[:, f], forward(t2i, x[:, f:f + 1], logsnr, text, mask)[:, 0], atol=1e-5)
  assert not np.allclose(out[:, 1], forward(t2i, x[:, 1:2], logsnr, text, mask)[:, 0], atol=1e-3)


def _to_spatial_layout(video):
  return video.reshape(-1, *video.shape[2:])


def test_temporal_resamplers_start_as_nearest_neighbour():
  video = np.random.default_rng(0).standard_normal((2, 8, 3, 3, 4)).astype(np.float32)
  down = stunet.TemporalDownsample(4, dtype=jnp.float32, rngs=nnx.Rngs(0))
  up = stunet.TemporalUpsample(4, dtype=jnp.float32, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(down(_to_spatial_layout(video), frames=8),
                             _to_spatial_layout(video[:, ::2]), atol=1e-6)
  np.testing.assert_allclose(up(_to_spatial_layout(video), frames=8),
                             _to_spatial_layout(np.repeat(video, 2, axis=1)), atol=1e-6)


def test_temporal_blocks_start_as_identity():
  # Widths of the micro model's levels, so the random init reuses compilations already made.
  video = np.random.default_rng(0).standard_normal((2, 4, 3, 3, 32)).astype(np.float32)
  emb = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
  conv = stunet.ConvInflation(32, 64, groups=4, dtype=jnp.float32, rngs=init_rngs())
  attn = stunet.TemporalAttention(32, 64, 16, num_heads=2, dtype=jnp.float32, rngs=init_rngs())
  text = np.random.default_rng(2).standard_normal((2, 5, 16)).astype(np.float32)
  text_mask = np.arange(5)[None] < np.array([[3], [5]])
  apply = nnx.jit(lambda block, x, e, *text: block(x, e, *text, frames=4))
  for block, extra in ((conv, ()), (attn, (text, text_mask))):
    np.testing.assert_array_equal(apply(block, _to_spatial_layout(video), emb, *extra), _to_spatial_layout(video))


def test_gradients_reach_temporal_parameters():
  config = micro_config('base')
  spec = spec_of('base')
  flat = base_flat()
  temporal = {k: v for k, v in flat.items() if is_temporal(k)}
  x, logsnr, text, mask = inputs(config, frames=config.model.num_frames)

  def loss(params):
    return jnp.mean(spec.merge({**flat, **params})(x, logsnr, text, mask) ** 2)

  grads = jax.jit(jax.grad(loss))(temporal)
  assert set(grads) == set(temporal)
  zero_init = [k for k in temporal if k.endswith(('proj.kernel', 'attn.out.kernel'))]
  resamplers = [k for k in temporal if 'temporal_resize' in k and k.endswith('kernel')]
  assert zero_init and len(resamplers) == 4
  for key in zero_init + resamplers:
    assert np.isfinite(grads[key]).all() and np.abs(grads[key]).max() > 0, key
