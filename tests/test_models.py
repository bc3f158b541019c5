"""Models: text encoder, T2I U-Net behaviour, parameter metadata, compute dtype, remat and dropout.

Models are built once concretely (random init compiles slowly on CPU) and otherwise rebuilt from flat parameter
dicts through `ModelSpec`, the path training uses. Helpers here are shared with test_stunet.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lumiere_jax import models
from lumiere_jax.data import tokenizers
from lumiere_jax.models import layers, stunet
from lumiere_jax.models.text import TransformerBlock
from lumiere_jax.models import params as params_lib
from micro import micro_config

LOGICAL_NAMES = {None, 'embed', 'mlp', 'heads', 'norm', 'vocab'}
CAPTIONS = ['a red circle moving right', '']  # the second is the empty caption of classifier-free guidance


@functools.cache
def spec_of(stage: str, **overrides) -> params_lib.ModelSpec:
  """The abstract model of `micro_config(stage, **overrides)` (building one takes seconds: cached)."""
  config = micro_config(stage, **overrides)
  return params_lib.ModelSpec.from_builder(lambda: models.build_model(config, rngs=nnx.Rngs(0)))


def perturb(flat: dict, scale=0.2, seed=1) -> dict:
  """Parameters plus Gaussian noise, so zero-initialised branches (residual convs, attention outputs) act."""
  rng = np.random.default_rng(seed)
  return {k: v + scale * rng.standard_normal(v.shape).astype(np.float32) for k, v in sorted(flat.items())}


def inputs(config, frames, batch=2, seed=0):
  """Random video, logsnr and caption embeddings (width config.text.width); the last caption is empty."""
  rng = np.random.default_rng(seed)
  size, length = config.model.image_size, config.text.max_length
  x = rng.standard_normal((batch, frames, size, size, config.model.in_channels)).astype(np.float32)
  logsnr = rng.uniform(-6, 6, batch).astype(np.float32)
  mask = np.arange(length)[None] < rng.integers(1, length, (batch, 1))
  mask[-1] = False
  text = np.where(mask[..., None], rng.standard_normal((batch, length, config.text.width)), 0).astype(np.float32)
  return x, logsnr, text, mask


@nnx.jit
def forward(model, x, logsnr, text, mask):
  return model(x, logsnr, text, mask)


def init_rngs() -> nnx.Rngs:
  """Seed 0 with the 'rbg' generator: its random init compiles twice as fast as threefry's on CPU."""
  return nnx.Rngs(jax.random.key(0, impl='rbg'))


@functools.cache
def base_flat() -> dict:
  """Concrete parameters of the micro STUNet, built once per process."""
  return params_lib.flat_params(models.build_model(micro_config('base'), rngs=init_rngs()))


def t2i_flat() -> dict:
  """The micro T2I model's parameters: the STUNet's spatial ones (same paths, same init)."""
  return {k: base_flat()[k] for k in spec_of('t2i').shapes}


def test_text_encoder_masks_padding_and_empty_captions():
  config = micro_config('t2i')
  model = spec_of('t2i').merge(t2i_flat())
  tokens, mask = tokenizers.build_tokenizer(config.text).encode(CAPTIONS)
  encode = nnx.jit(lambda m, t, k: m.encode_text(t, k))
  emb = np.asarray(encode(model, tokens, mask))
  assert emb.shape == (2, config.text.max_length, config.text.width) and emb.dtype == np.float32
  assert np.isfinite(emb).all() and not emb[~mask].any() and emb[mask].any()
  padded = tokens.copy()
  padded[~mask] = 77  # garbage behind the mask must not leak into valid positions
  np.testing.assert_allclose(encode(model, padded, mask), emb, atol=1e-6)
  changed = tokens.copy()
  changed[0, 0] += 1  # a valid token does reach the other positions through attention
  assert not np.allclose(np.asarray(encode(model, changed, mask))[0, 1:mask[0].sum()], emb[0, 1:mask[0].sum()])
  with pytest.raises(ValueError, match='max_length'):
    model.encode_text(np.zeros((1, config.text.max_length + 1), np.int32), np.ones((1, config.text.max_length + 1)))


def test_t2i_processes_frames_independently():
  config = micro_config('t2i')
  model = spec_of('t2i').merge(perturb(t2i_flat()))
  x, logsnr, text, mask = inputs(config, frames=3)
  out = np.asarray(forward(model, x, logsnr, text, mask))
  assert out.shape == x.shape and out.dtype == np.float32 and np.isfinite(out).all()
  for f in range(3):
    np.testing.assert_allclose(out[:, f:f + 1], forward(model, x[:, f:f + 1], logsnr, text, mask), atol=1e-5)


def test_empty_caption_is_well_defined():
  config = micro_config('t2i')
  model = spec_of('t2i').merge(perturb(t2i_flat()))
  x, logsnr, text, mask = inputs(config, frames=1)
  out = np.asarray(forward(model, x, logsnr, text, mask))
  junk = np.random.default_rng(5).standard_normal(text.shape).astype(np.float32)
  junk_text = np.where(mask[..., None], text, junk)  # values behind the mask, incl. the whole empty caption
  np.testing.assert_allclose(forward(model, x, logsnr, junk_text, mask), out, atol=1e-5)
  other = np.asarray(forward(model, x, logsnr, np.roll(text, 1, axis=0), np.roll(mask, 1, axis=0)))
  assert not np.allclose(other[0], out[0], atol=1e-3)  # the caption does condition the output


@pytest.mark.parametrize('stage', ['t2i', 'base'])
def test_every_parameter_has_logical_names(stage):
  abstract = nnx.eval_shape(lambda: models.build_model(micro_config(stage), rngs=nnx.Rngs(0)))
  state = nnx.to_flat_state(nnx.state(abstract))
  assert len(state) > 0
  for path, variable in state:
    names = variable.get_metadata().get('out_sharding')
    assert isinstance(variable, nnx.Param), path
    assert variable.get_value().dtype == jnp.float32, path
    assert names is not None and len(names) == variable.get_value().ndim, (path, names)
    assert set(names) <= LOGICAL_NAMES, (path, names)
  assert all(key.startswith(('text_encoder.', 'unet.')) for key in spec_of(stage).shapes)


def test_bfloat16_compute_stays_close_to_float32():
  config = micro_config('base')
  flat = perturb(base_flat(), scale=0.05)
  x, logsnr, text, mask = inputs(config, frames=config.model.num_frames)  # the shapes of the STUNet tests
  ref = np.asarray(forward(spec_of('base').merge(flat), x, logsnr, text, mask))
  bf16 = spec_of('base', **{'model.dtype': 'bfloat16'}).merge(flat)
  out = np.asarray(forward(bf16, x, logsnr, text, mask))
  assert out.dtype == np.float32 and np.isfinite(out).all()
  assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.05


@pytest.mark.parametrize('policy', ['none', 'nothing_saveable'])
def test_remat_policy_checkpoints_every_block(policy):
  config = micro_config('base')
  spec = spec_of('base', **{'model.remat_policy': policy})
  x, logsnr, _, mask = inputs(config, frames=config.model.num_frames)
  tokens = np.where(mask, 7, 0)

  def loss(params):
    model = spec.merge(params)
    return jnp.mean(model(x, logsnr, model.encode_text(tokens, mask), mask) ** 2)

  remats = sum(e.primitive.name in ('checkpoint', 'remat2') for e in jax.make_jaxpr(loss)(spec.shapes).eqns)
  block_types = (layers.ResBlock, layers.SpatialAttention, stunet.ConvInflation, stunet.TemporalAttention,
                 TransformerBlock)
  blocks = sum(isinstance(node, block_types) for _, node in nnx.iter_graph(spec.merge(spec.shapes)))
  assert blocks > 0 and remats == (0 if policy == 'none' else blocks)
  assert jax.eval_shape(jax.grad(loss), spec.shapes).keys() == spec.shapes.keys()  # frame counts stay static


def test_dropout_only_with_rngs():
  x, logsnr, text, mask = inputs(micro_config('t2i'), frames=1)
  flat = perturb(t2i_flat())
  plain = spec_of('t2i').merge(flat)
  dropout = spec_of('t2i', **{'model.dropout': 0.5}).merge(flat)
  ref = np.asarray(forward(plain, x, logsnr, text, mask))
  np.testing.assert_allclose(forward(dropout, x, logsnr, text, mask), ref, atol=1e-6)
  noisy = nnx.jit(lambda m, r: m(x, logsnr, text, mask, rngs=r))
  first, second = np.asarray(noisy(dropout, nnx.Rngs(dropout=0))), np.asarray(noisy(dropout, nnx.Rngs(dropout=1)))
  assert np.isfinite(first).all() and not np.allclose(first, ref, atol=1e-3) and not np.allclose(first, second)


def test_unknown_stage_is_rejected():
  config = micro_config('t2i')
  config.unlock()
  config.stage = 'video2audio'
  with pytest.raises(ValueError, match='stage'):
    models.build_model(config, rngs=nnx.Rngs(0))
