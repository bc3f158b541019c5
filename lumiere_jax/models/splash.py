"""Pallas splash attention (TPU), the `model.attention='splash'` kernel: flash attention without the logits in HBM.

The kernel takes one clip's (heads, length, head_dim) with lengths in whole blocks, so queries and keys are padded to
multiples of `BLOCK`; padded keys and the caption's padding are excluded through segment ids (a key attends only
where its id equals the query's), and a row with no valid key attends to its first key instead of to nothing (the
kernel's softmax needs one) and is zeroed afterwards, as the cuDNN path does. Traced under a mesh (`jax.set_mesh`),
the kernel runs per device through `shard_map`: the batch split over the data-parallel axes and heads over the tensor
axis where they divide (a Pallas kernel is opaque to XLA's partitioner, which would otherwise gather its operands).
`interpret=True` runs the same kernel in Pallas' interpreter: how the tests check it on CPU.
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernels
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
from jax.sharding import PartitionSpec as P

BLOCK = 128  # the kernel's tile: lengths are padded to a multiple of it
# Mesh axes of the configs' axis rules ('batch' and 'heads'; parallel/mesh.py) that the kernel is mapped over.
BATCH_AXES, HEAD_AXIS = ('data', 'fsdp'), 'tensor'


def _block(length: int) -> int:
  """The largest of 512, 256, 128 dividing `length` (a multiple of BLOCK)."""
  return next(b for b in (512, 256, BLOCK) if length % b == 0)


@functools.lru_cache(maxsize=None)
def _kernel(heads: int, q_length: int, kv_length: int, interpret: bool):
  """The splash kernel of one clip for these (padded) shapes, no static mask beyond the segment ids."""
  bq, bkv = _block(q_length), _block(kv_length)
  sizes = kernels.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv,
                             block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv)
  mask = masks.MultiHeadMask([masks.FullMask((q_length, kv_length)) for _ in range(heads)])
  return kernels.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _pad_to_block(x: jax.Array, axis: int = 1, value=0) -> jax.Array:
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, -x.shape[axis] % BLOCK)
  return jnp.pad(x, pad, constant_values=value)


def _local_attention(q, k, v, key_mask, *, interpret: bool):
  """Splash attention of one device's q (N, S, heads, d) over k, v (N, L, heads, d) and key_mask (N, L) bool."""
  length = q.shape[1]
  rows_with_keys = key_mask.any(axis=-1)
  first_key = jnp.arange(key_mask.shape[1]) == 0
  valid = key_mask | (first_key[None] & ~rows_with_keys[:, None])
  segments = kernels.SegmentIds(q=jnp.zeros(_pad_to_block(q[..., 0, 0]).shape, jnp.int32),
                                kv=_pad_to_block(jnp.where(valid, 0, 1).astype(jnp.int32), value=1))
  heads_first = lambda x: _pad_to_block(x).transpose(0, 2, 1, 3)  # noqa: E731  (N, heads, padded length, d)
  q, k, v = heads_first(q * q.shape[-1] ** -0.5), heads_first(k), heads_first(v)
  kernel = _kernel(q.shape[1], q.shape[2], k.shape[2], interpret)
  out = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=s))(q, k, v, segments)
  out = out.transpose(0, 2, 1, 3)[:, :length]
  return jnp.where(rows_with_keys[:, None, None, None], out, 0)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None, *,
                     interpret: bool = False) -> jax.Array:
  """Attention (N, S, heads, d) of q over k, v (N, L, heads, d), keys masked by key_mask (N, L) bool (None: all
  valid); rows without a valid key are zero. Under a mesh, mapped per device over its batch and head axes."""
  if key_mask is None:
    key_mask = jnp.ones(k.shape[:2], bool)
  attend = functools.partial(_local_attention, interpret=interpret)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return attend(q, k, v, key_mask)
  size = lambda axes: math.prod(mesh.shape.get(a, 1) for a in axes)  # noqa: E731
  batch = tuple(a for a in BATCH_AXES if a in mesh.shape) if q.shape[0] % size(BATCH_AXES) == 0 else ()
  heads = HEAD_AXIS if HEAD_AXIS in mesh.shape and q.shape[2] % mesh.shape[HEAD_AXIS] == 0 else None
  qkv = P(batch or None, None, heads, None)
  return jax.shard_map(attend, mesh=mesh, in_specs=(qkv, qkv, qkv, P(batch or None, None)), out_specs=qkv,
                       check_vma=False)(q, k, v, key_mask)
