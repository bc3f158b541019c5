"""`model.attention`: every implementation usable on this platform agrees with XLA's masked attention, the padded
caption mask is honoured, empty captions give finite zeros, and an unusable request fails naming the field."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lumiere_jax.models import layers
from lumiere_jax.models.deepfloyd_if_blocks import AddedKVAttention


def qkv_and_mask(seed=0, batch=3, queries=5, keys=7, heads=2, dim=8):
  """Random q, k, v and a padded-caption mask (valid keys first); the last row is an empty caption."""
  rng = np.random.default_rng(seed)
  q, k, v = (jnp.asarray(rng.standard_normal((batch, n, heads, dim)), jnp.float32) for n in (queries, keys, keys))
  mask = np.arange(keys)[None] < np.array([keys, 3, 0])[:batch, None]
  return q, k, v, jnp.asarray(mask)


def reference(q, k, v, mask):
  """NumPy float64 softmax attention over the valid keys; zero rows where no key is valid."""
  q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  logits = np.where(np.asarray(mask)[:, None, None, :], logits, -np.inf)
  with np.errstate(invalid='ignore'):
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights = weights / weights.sum(-1, keepdims=True)
  return np.nan_to_num(np.einsum('bhqk,bkhd->bqhd', weights, v))


def test_xla_masked_attention_matches_reference_and_zeroes_empty_captions():
  q, k, v, mask = qkv_and_mask()
  out = layers.masked_attention(q, k, v, mask, implementation='xla')
  np.testing.assert_allclose(out, reference(q, k, v, mask), atol=1e-5)
  assert np.isfinite(out).all() and not np.asarray(out[-1]).any()


@pytest.mark.parametrize('implementation', ['xla', 'cudnn'])
def test_mask_arguments_of_every_implementation_agree_with_xla(implementation):
  """cuDNN's mask is a key count: fed to the XLA kernel (the one this CPU has), it must mask exactly as the XLA
  mask does, including the empty caption (a count clamped to 1, then zeroed) and in the gradients."""
  q, k, v, mask = qkv_and_mask(seed=1)

  def attend(q, k, v):
    out = jax.nn.dot_product_attention(q, k, v, implementation='xla',
                                       **layers.key_mask_arguments(mask, implementation))
    return jnp.where(mask.any(-1)[:, None, None, None], out, 0)

  np.testing.assert_allclose(attend(q, k, v), reference(q, k, v, mask), atol=1e-5)
  grads = jax.grad(lambda *t: jnp.sum(attend(*t) ** 2), argnums=(0, 1, 2))(q, k, v)
  assert all(np.isfinite(g).all() for g in grads)
  assert not np.asarray(grads[1][1, 3:]).any()  # padded keys of the second caption get no gradient


@pytest.mark.parametrize('implementation', ['auto', 'xla'])
def test_attention_module_agrees_with_xla_on_this_platform(implementation):
  x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 5, 16)), jnp.float32)
  _, _, _, mask = qkv_and_mask()
  context = jnp.asarray(np.random.default_rng(3).standard_normal((3, 7, 12)), jnp.float32)
  module = layers.Attention(16, 12, 2, dtype=jnp.float32, rngs=nnx.Rngs(0), implementation=implementation)
  xla = layers.Attention(16, 12, 2, dtype=jnp.float32, rngs=nnx.Rngs(0), implementation='xla')
  out = module(x, context, mask)
  np.testing.assert_allclose(out, xla(x, context, mask), atol=1e-6)
  assert np.isfinite(out).all() and not np.asarray(out[-1]).any()


def test_auto_picks_cudnn_only_for_half_precision_on_gpu():
  expected = 'cudnn' if jax.default_backend() == 'gpu' else 'xla'
  assert layers.attention_implementation('auto', jnp.bfloat16, 64) == expected
  assert layers.attention_implementation('auto', jnp.float32, 64) == 'xla'
  assert layers.attention_implementation('auto', jnp.bfloat16, 12) == 'xla'  # head dim cuDNN cannot take


@pytest.mark.skipif(jax.default_backend() == 'gpu', reason='cuDNN exists here')
def test_cudnn_without_a_gpu_names_the_field():
  module = layers.Attention(16, 16, 2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0), implementation='cudnn')
  x = jnp.zeros((1, 4, 16), jnp.bfloat16)
  with pytest.raises(ValueError, match=r"model\.attention='cudnn' needs a GPU"):
    module(x, x)


def test_unknown_implementation_names_the_field():
  with pytest.raises(ValueError, match=r'model\.attention=.splash.'):
    layers.Attention(16, 16, 2, dtype=jnp.float32, rngs=nnx.Rngs(0), implementation='splash')


def take_cudnn_path_on_xla(monkeypatch):
  """From here on the models take their cuDNN code path (key counts, IF's pixel-first key order) with XLA's kernel
  under it, since this platform has no cuDNN: what that path asks the kernel for must give the XLA path's answer."""
  real = jax.nn.dot_product_attention

  def on_xla(*args, implementation=None, **kwargs):
    assert implementation == 'cudnn' and 'mask' not in kwargs and 'bias' not in kwargs
    return real(*args, implementation='xla', **kwargs)

  monkeypatch.setattr(layers, 'attention_implementation', lambda *_: 'cudnn')
  monkeypatch.setattr(jax.nn, 'dot_product_attention', on_xla)


def test_cudnn_path_of_attention_module_equals_xla(monkeypatch):
  rng = np.random.default_rng(4)
  x, context = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in ((3, 5, 16), (3, 7, 12)))
  _, _, _, mask = qkv_and_mask()
  module = layers.Attention(16, 12, 2, dtype=jnp.float32, rngs=nnx.Rngs(0))
  expected = np.asarray(module(x, context, mask))
  take_cudnn_path_on_xla(monkeypatch)
  out = np.asarray(module(x, context, mask))
  np.testing.assert_allclose(out, expected, atol=1e-6)
  assert not out[-1].any()


def test_cudnn_path_of_if_attention_equals_its_bias_path(monkeypatch):
  """IF's attention: diffusers' -10000 bias on masked text keys (XLA) vs pixel keys first and a key count (cuDNN)."""
  cfg = types.SimpleNamespace(cross_attention_dim=12, norm_num_groups=4, cross_attention_norm=None)
  module = AddedKVAttention(16, 8, cfg, only_cross_attention=False, dtype=jnp.float32, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.standard_normal((6, 2, 3, 16)), jnp.float32)  # 3 clips of 2 frames, 2x3 pixels
  text = jnp.asarray(rng.standard_normal((3, 7, 12)), jnp.float32)
  _, _, _, mask = qkv_and_mask()
  expected = np.asarray(module(x, text, mask, frames=2))
  take_cudnn_path_on_xla(monkeypatch)
  np.testing.assert_allclose(module(x, text, mask, frames=2), expected, atol=1e-5)
