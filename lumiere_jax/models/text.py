"""The built-in text encoder: a small pre-LN transformer over byte tokens (`config.text.encoder='builtin'`).

It stands in for the paper's frozen T5 so the default run needs no download. The U-Net consumes only its output
embeddings (B, L, D) and mask, so another encoder of width D can replace it without touching the U-Net.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lumiere_jax.models import layers

# Token ids of the byte tokenizer (data/tokenizers.py): pad 0, EOS 1, then the 256 bytes.
BYTE_VOCAB_SIZE = 256 + 2


class TransformerBlock(nnx.Module):
  """x + attn(LN(x)) over the valid tokens, then x + MLP(LN(x)) with a 4x hidden width."""

  def __init__(self, width: int, num_heads: int, *, remat: str, dtype, rngs: nnx.Rngs):
    self.remat = remat
    self.attn_norm = layers.layer_norm(width, dtype=dtype, rngs=rngs)
    self.attn = layers.Attention(width, width, num_heads, dtype=dtype, rngs=rngs)
    self.mlp_norm = layers.layer_norm(width, dtype=dtype, rngs=rngs)
    self.mlp_in = layers.dense(width, 4 * width, dtype=dtype, rngs=rngs)
    self.mlp_out = layers.dense(4 * width, width, dtype=dtype, rngs=rngs, names=('mlp', 'embed'))

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    h = self.attn_norm(x)
    x = x + self.attn(h, h, mask)
    return x + self.mlp_out(nnx.gelu(self.mlp_in(self.mlp_norm(x))))


class TextEncoder(nnx.Module):
  """tokens int32 (B, L), mask bool (B, L) -> layer-normed embeddings float32 (B, L, width), zero where masked.

  An empty caption (mask all False) gives all-zero embeddings, the same "null" caption text dropout trains with.
  """

  def __init__(self, text_config, *, dtype, remat: str, rngs: nnx.Rngs):
    width = text_config.width
    self.max_length = text_config.max_length
    self.remat = remat
    self.embed = nnx.Embed(
        BYTE_VOCAB_SIZE, width, dtype=dtype,
        embedding_init=nnx.with_partitioning(nnx.initializers.normal(0.02), ('vocab', 'embed')), rngs=rngs)
    self.positions = nnx.Param(nnx.with_partitioning(nnx.initializers.normal(0.02), (None, 'embed'))(
        rngs.params(), (self.max_length, width)))
    self.blocks = nnx.List([TransformerBlock(width, text_config.num_heads, remat=remat, dtype=dtype, rngs=rngs)
                            for _ in range(text_config.depth)])
    self.norm = layers.layer_norm(width, dtype=dtype, rngs=rngs)

  def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    length = tokens.shape[1]
    if length > self.max_length:
      raise ValueError(f'{length} tokens exceed text.max_length={self.max_length}')
    mask = mask.astype(bool)
    x = self.embed(tokens) + self.positions[:length].astype(self.embed.dtype)
    for block in self.blocks:
      x = layers.checkpoint(self.remat, block, x, mask)
    return jnp.where(mask[..., None], self.norm(x), 0).astype(jnp.float32)
