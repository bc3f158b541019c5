"""`model.attention`: every implementation usable on this platform agrees with XLA's masked attention, the padded
caption mask is honoured, empty captions give finite zeros, and an unusable request fails naming the field. The TPU
splash kernel runs here in Pallas' interpreter: the same kernel code, checked against the float64 reference."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lumiere_jax.models import layers, splash
from lumiere_jax.parallel import mesh as mesh_lib
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


@pytest.mark.skipif(jax.default_backend() == 'tpu', reason='auto is splash on TPU')
def test_auto_picks_cudnn_only_for_half_precision_on_gpu():
  expected = 'cudnn' if jax.default_backend() == 'gpu' else 'xla'
  assert layers.attention_implementation('auto', jnp.bfloat16, 64) == expected
  assert layers.attention_implementation('auto', jnp.float32, 64) == 'xla'
  assert layers.attention_implementation('auto', jnp.bfloat16, 12) == 'xla'  # head dim cuDNN cannot take


@pytest.mark.parametrize('implementation, platform, needs', [('cudnn', 'gpu', 'a GPU'), ('splash', 'tpu', 'a TPU')])
def test_a_kernel_off_its_platform_names_the_field(implementation, platform, needs):
  if jax.default_backend() == platform:
    pytest.skip(f'{implementation} runs here')
  module = layers.Attention(16, 16, 2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0), implementation=implementation)
  x = jnp.zeros((1, 4, 16), jnp.bfloat16)
  with pytest.raises(ValueError, match=rf"model\.attention='{implementation}' needs {needs}"):
    module(x, x)


def test_unknown_implementation_names_the_field():
  with pytest.raises(ValueError, match=r'model\.attention=.flash.'):
    layers.Attention(16, 16, 2, dtype=jnp.float32, rngs=nnx.Rngs(0), implementation='flash')


def test_splash_kernel_matches_reference_with_padded_and_empty_captions():
  """Lengths padded to the kernel's block, padded keys and an empty caption excluded by segment ids, and gradients
  that reach no padded key."""
  q, k, v, mask = qkv_and_mask(seed=6)
  attend = functools.partial(splash.splash_attention, interpret=True)
  out = attend(q, k, v, mask)
  np.testing.assert_allclose(out, reference(q, k, v, mask), atol=1e-5)
  assert not np.asarray(out[-1]).any()
  np.testing.assert_allclose(attend(q, k, v), reference(q, k, v, np.ones(mask.shape, bool)), atol=1e-5)
  grads = jax.grad(lambda *t: jnp.sum(attend(*t, mask) ** 2), argnums=(0, 1, 2))(q, k, v)
  expected = jax.grad(lambda *t: jnp.sum(layers.masked_attention(*t, mask, implementation='xla') ** 2),
                      argnums=(0, 1, 2))(q, k, v)
  for got, want in zip(grads, expected):
    np.testing.assert_allclose(got, want, atol=1e-4)
  assert not np.asarray(grads[1][1, 3:]).any()  # padded keys of the second caption get no gradient


def test_splash_under_a_mesh_runs_per_device_and_equals_one_device():
  q, k, v, _ = qkv_and_mask(seed=7, batch=4)
  mask = jnp.asarray(np.arange(7)[None] < np.array([7, 3, 0, 5])[:, None])  # an empty caption on the second device
  mesh = mesh_lib.make_mesh(dict(data=2, fsdp=1, tensor=2), jax.devices()[:4])
  attend = jax.jit(functools.partial(splash.splash_attention, interpret=True))
  with jax.set_mesh(mesh):
    hlo = attend.lower(q, k, v, mask).as_text()
    sharded = attend(q, k, v, mask)
  assert 'shard_map' in hlo or 'manual' in hlo  # the kernel is mapped per device, not partitioned by XLA
  np.testing.assert_allclose(sharded, attend(q, k, v, mask), atol=1e-6)


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


def test_splash_path_of_both_attention_modules_equals_xla(monkeypatch):
  """What the models ask the splash kernel for (the STUNet's masked attention, IF's pixel-and-text keys) gives the
  XLA path's answer; the kernel runs interpreted, as this platform has no TPU."""
  rng = np.random.default_rng(8)
  x, context = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in ((3, 5, 16), (3, 7, 12)))
  _, _, _, mask = qkv_and_mask()
  module = layers.Attention(16, 12, 2, dtype=jnp.float32, rngs=nnx.Rngs(0))
  cfg = types.SimpleNamespace(cross_attention_dim=12, norm_num_groups=4, cross_attention_norm=None)
  if_module = AddedKVAttention(16, 8, cfg, only_cross_attention=False, dtype=jnp.float32, rngs=nnx.Rngs(0))
  pixels = jnp.asarray(rng.standard_normal((6, 2, 3, 16)), jnp.float32)  # 3 clips of 2 frames, 2x3 pixels
  expected = np.asarray(module(x, context, mask)), np.asarray(if_module(pixels, context, mask, frames=2))
  monkeypatch.setattr(layers, 'attention_implementation', lambda *_: 'splash')
  monkeypatch.setattr(splash, 'splash_attention', functools.partial(splash.splash_attention, interpret=True))
  np.testing.assert_allclose(module(x, context, mask), expected[0], atol=1e-5)
  np.testing.assert_allclose(if_module(pixels, context, mask, frames=2), expected[1], atol=1e-5)
