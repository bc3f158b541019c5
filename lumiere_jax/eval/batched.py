"""Feature extractors over any batch size: one jitted network, the batch split over a mesh."""

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np


def jit_over_batch(apply, params, mesh: jax.sharding.Mesh | None):
  """`videos -> apply(params, videos)` jitted, videos split over every device of `mesh`; None: one device.

  `params` are placed once (replicated over the mesh). The returned callable takes host arrays of any batch size,
  pads the batch to a multiple of the mesh size (the padding is dropped from the result) and returns NumPy.
  """
  if mesh is None:
    jitted, shards, batch = jax.jit(apply), 1, None
    params = jax.device_put(params)
  else:
    batch, replicated = NamedSharding(mesh, P(mesh.axis_names)), NamedSharding(mesh, P())
    jitted, shards = jax.jit(apply, in_shardings=(replicated, batch), out_shardings=batch), mesh.size
    params = jax.device_put(params, replicated)

  def run(videos) -> np.ndarray:
    videos = np.asarray(videos)
    count = len(videos)
    padded = np.pad(videos, [(0, -count % shards)] + [(0, 0)] * (videos.ndim - 1))
    with jax.default_matmul_precision('highest'):  # full float32, as the references ran (TPUs default to bf16)
      return np.asarray(jitted(params, padded if batch is None else jax.device_put(padded, batch)))[:count]

  return run
