"""`model.temporal_layout`: the transpose-free temporal convs, resamplers and attention equal the transposing ones
(float32)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lumiere_jax.models import stunet

FEATURES = 8


def randomised(module: nnx.Module, seed: int) -> nnx.Module:
  """Random parameters everywhere: identity and zero inits would hide a wrong tap or a wrong shift."""
  rng = np.random.default_rng(seed)
  params = [node for _, node in nnx.iter_graph(module) if isinstance(node, nnx.Param)]
  assert params
  for param in params:
    param[...] = jnp.asarray(rng.standard_normal(param[...].shape), jnp.float32)
  return module


def both_layouts(build, call, frames: int, seed=0):
  x = jnp.asarray(np.random.default_rng(seed).standard_normal((2 * frames, 3, 4, FEATURES)), jnp.float32)
  module = randomised(build(), seed + 1)
  module.layout = 'transpose'
  ref = call(module, x)
  module.layout = 'video'
  return np.asarray(call(module, x)), np.asarray(ref)


@pytest.mark.parametrize('frames', [8, 5])
@pytest.mark.parametrize('kind', ['downsample', 'upsample'])
def test_video_layout_resamplers_equal_transposed(kind, frames):
  cls = dict(downsample=stunet.TemporalDownsample, upsample=stunet.TemporalUpsample)[kind]
  out, ref = both_layouts(lambda: cls(FEATURES, dtype=jnp.float32, rngs=nnx.Rngs(0)),
                          lambda m, x: m(x, frames=frames), frames)
  assert out.shape == ref.shape == ((2 * -(-frames // 2) if kind == 'downsample' else 4 * frames), 3, 4, FEATURES)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_video_layout_conv_inflation_equals_transposed():
  emb = jnp.asarray(np.random.default_rng(5).standard_normal((16, 6)), jnp.float32)
  out, ref = both_layouts(lambda: stunet.ConvInflation(FEATURES, 6, groups=2, dtype=jnp.float32, rngs=nnx.Rngs(0)),
                          lambda m, x: m(x, emb, frames=8), frames=8)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_video_layout_temporal_attention_equals_transposed():
  rng = np.random.default_rng(6)
  emb, text = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in ((16, 6), (2, 5, 12)))
  mask = jnp.asarray(np.arange(5)[None] < np.array([[5], [2]]))
  out, ref = both_layouts(
      lambda: stunet.TemporalAttention(FEATURES, 6, 12, num_heads=2, dtype=jnp.float32, rngs=nnx.Rngs(0),
                                       attention='xla'),
      lambda m, x: m(x, emb, text, mask, frames=8), frames=8)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_auto_resolves_per_platform_and_unknown_layout_names_the_field():
  assert {stunet.resolve_layout('auto', op) for op in ('conv', 'attention')} <= {'transpose', 'video'}
  assert stunet.resolve_layout('transpose') == 'transpose'
  with pytest.raises(ValueError, match=r'model\.temporal_layout=.sideways.'):
    stunet.TemporalUpsample(FEATURES, dtype=jnp.float32, rngs=nnx.Rngs(0), layout='sideways')
