"""The T5 encoder (`config.text.encoder='t5'`): the paper's frozen text encoder, loaded from a Hugging Face checkpoint.

It computes what Hugging Face `T5EncoderModel` computes, for v1.0 (ReLU feed-forward) and v1.1 / Flan (gated-GELU)
checkpoints: pre-norm residual blocks with RMS layer norms, no biases, attention logits left unscaled plus a
bidirectional relative position bias that the first layer computes and every layer shares, and a final RMS norm.
The architecture comes from the checkpoint's `config.json` (or, where only shapes matter and no checkpoint is given,
from `text.architecture`, a published architecture of `ARCHITECTURES`); the weights from its safetensors
(`t5_weights.py`).
"""

import dataclasses
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lumiere_jax.models import layers

# config.json `feed_forward_proj` -> (gated, activation); Hugging Face runs 'gated-gelu' with the tanh GELU.
FEED_FORWARD = {
    'relu': (False, jax.nn.relu),
    'gated-gelu': (True, lambda x: jax.nn.gelu(x, approximate=True)),
}


@dataclasses.dataclass(frozen=True)
class T5Config:
  """The fields of a Hugging Face T5 `config.json` the encoder needs (defaults: Hugging Face's)."""
  vocab_size: int
  d_model: int
  d_kv: int
  d_ff: int
  num_layers: int
  num_heads: int
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  feed_forward_proj: str = 'relu'
  layer_norm_epsilon: float = 1e-6

  @classmethod
  def from_checkpoint(cls, directory) -> 'T5Config':
    """Reads `<directory>/config.json`; ValueError naming the file and what is missing or unsupported."""
    path = pathlib.Path(directory) / 'config.json'
    if not path.is_file():
      raise ValueError(f'{path}: not found (a T5 checkpoint directory holds config.json and model.safetensors)')
    hf = json.loads(path.read_text())
    fields = dataclasses.fields(cls)
    missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in hf]
    if missing:
      raise ValueError(f'{path}: missing {missing}')
    config = cls(**{f.name: hf[f.name] for f in fields if f.name in hf})
    if config.feed_forward_proj not in FEED_FORWARD:
      raise ValueError(f'{path}: feed_forward_proj={config.feed_forward_proj!r} is not supported '
                       f'(known: {tuple(FEED_FORWARD)})')
    return config

  @classmethod
  def of(cls, text_config) -> 'T5Config':
    """The architecture of `text.checkpoint`'s config.json, or without a checkpoint the `text.architecture` named;
    ValueError naming the field when neither gives one."""
    if text_config.checkpoint:
      return cls.from_checkpoint(text_config.checkpoint)
    if text_config.architecture in ARCHITECTURES:
      return ARCHITECTURES[text_config.architecture]
    raise ValueError(f'text.architecture={text_config.architecture!r} is not a known T5 architecture '
                     f'{tuple(ARCHITECTURES)}; text.checkpoint names none either (a Hugging Face T5 directory)')


# Published architectures, for what needs only shapes (ahead-of-time compiles, size tables) without a checkpoint.
ARCHITECTURES = {
    # DeepFloyd IF's frozen text encoder (google/t5-v1_1-xxl, IF's text_encoder/config.json).
    't5-v1_1-xxl': T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                            feed_forward_proj='gated-gelu'),
}


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """Bucket int32 (query, key) of the offset key - query, as T5's bidirectional `_relative_position_bucket`.

  Half the buckets hold keys after the query. In each half, offsets below a quarter of the buckets get one bucket
  each, larger ones share log-spaced buckets up to `max_distance`, and farther offsets the last bucket.
  """
  offset = np.arange(length)[None, :] - np.arange(length)[:, None]
  half = num_buckets // 2
  exact = half // 2
  distance = np.abs(offset)
  # float32 as in PyTorch, so bucket edges land where they do there.
  scaled = np.log(np.maximum(distance, 1).astype(np.float32) / exact) / np.float32(math.log(max_distance / exact))
  log_bucket = np.minimum(exact + (scaled * (half - exact)).astype(np.int32), half - 1)
  return ((offset > 0) * half + np.where(distance < exact, distance, log_bucket)).astype(np.int32)


def rms_norm(features: int, epsilon: float, *, dtype, rngs: nnx.Rngs) -> nnx.RMSNorm:
  """T5's layer norm: scale * x / rms(x), statistics in float32, no mean subtraction and no bias."""
  return nnx.RMSNorm(features, epsilon=epsilon, dtype=dtype,
                     scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ('norm',)), rngs=rngs)


class SelfAttention(nnx.Module):
  """Multi-head self-attention with unscaled logits plus the shared position bias; padding keys are not attended."""

  def __init__(self, config: T5Config, *, dtype, rngs: nnx.Rngs):
    self.num_heads = config.num_heads
    inner = config.num_heads * config.d_kv
    qkv = dict(dtype=dtype, rngs=rngs, names=('embed', 'heads'), use_bias=False)
    self.query = layers.dense(config.d_model, inner, **qkv)
    self.key = layers.dense(config.d_model, inner, **qkv)
    self.value = layers.dense(config.d_model, inner, **qkv)
    self.out = layers.dense(inner, config.d_model, dtype=dtype, rngs=rngs, names=('heads', 'embed'), use_bias=False)

  def __call__(self, x: jax.Array, bias: jax.Array, mask: jax.Array) -> jax.Array:
    """x (B, L, D), bias (1, heads, L, L), mask bool (B, L) over the keys."""
    split = lambda t: t.reshape(*t.shape[:-1], self.num_heads, -1)  # noqa: E731
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    out = jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype), mask=mask[:, None, None, :], scale=1.0)
    return self.out(out.reshape(x.shape[:-1] + (-1,)))


class FeedForward(nnx.Module):
  """down(act(up(x))), or down(act(up(x)) * up_linear(x)) for the gated variants; no biases."""

  def __init__(self, config: T5Config, *, dtype, rngs: nnx.Rngs):
    gated, self.activation = FEED_FORWARD[config.feed_forward_proj]
    dense = dict(dtype=dtype, rngs=rngs, use_bias=False)
    self.up = layers.dense(config.d_model, config.d_ff, **dense)
    self.up_linear = layers.dense(config.d_model, config.d_ff, **dense) if gated else None
    self.down = layers.dense(config.d_ff, config.d_model, names=('mlp', 'embed'), **dense)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.activation(self.up(x))
    if self.up_linear is not None:
      h = h * self.up_linear(x)
    return self.down(h)


class T5Block(nnx.Module):
  """x + attn(norm(x)), then x + ff(norm(x))."""

  def __init__(self, config: T5Config, *, dtype, rngs: nnx.Rngs):
    self.attn_norm = rms_norm(config.d_model, config.layer_norm_epsilon, dtype=dtype, rngs=rngs)
    self.attn = SelfAttention(config, dtype=dtype, rngs=rngs)
    self.mlp_norm = rms_norm(config.d_model, config.layer_norm_epsilon, dtype=dtype, rngs=rngs)
    self.mlp = FeedForward(config, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, bias: jax.Array, mask: jax.Array) -> jax.Array:
    x = x + self.attn(self.attn_norm(x), bias, mask)
    return x + self.mlp(self.mlp_norm(x))


class T5Encoder(nnx.Module):
  """tokens int32 (B, L), mask bool (B, L) -> embeddings float32 (B, L, d_model), zero where masked.

  Built from `text_config`'s architecture (`T5Config.of`) with random weights; training and `embed_captions` load the
  checkpoint's weights over them (`t5_weights.load_encoder_params`). `dtype` is the compute dtype.
  """

  def __init__(self, text_config, *, dtype, remat: str, rngs: nnx.Rngs):
    config = T5Config.of(text_config)
    self.remat = remat
    self.num_buckets = config.relative_attention_num_buckets
    self.max_distance = config.relative_attention_max_distance
    self.embed = nnx.Embed(
        config.vocab_size, config.d_model, dtype=dtype,
        embedding_init=nnx.with_partitioning(nnx.initializers.normal(1.0), ('vocab', 'embed')), rngs=rngs)
    self.relative_bias = nnx.Embed(
        self.num_buckets, config.num_heads,
        embedding_init=nnx.with_partitioning(nnx.initializers.normal(1.0), (None, 'heads')), rngs=rngs)
    self.blocks = nnx.List([T5Block(config, dtype=dtype, rngs=rngs) for _ in range(config.num_layers)])
    self.norm = rms_norm(config.d_model, config.layer_norm_epsilon, dtype=dtype, rngs=rngs)

  def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(bool)
    buckets = relative_position_buckets(tokens.shape[1], self.num_buckets, self.max_distance)
    bias = self.relative_bias(jnp.asarray(buckets)).transpose(2, 0, 1)[None]
    x = self.embed(tokens)
    for block in self.blocks:
      x = layers.checkpoint(self.remat, block, x, bias, mask)
    return jnp.where(mask[..., None], self.norm(x), 0).astype(jnp.float32)
