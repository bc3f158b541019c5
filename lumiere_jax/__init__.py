"""Lumiere text-to-video diffusion in JAX / Flax NNX."""

from flax import nnx

# Parameters carry logical axis names as metadata only; `lumiere_jax.parallel.sharding` turns them into shardings
# (dropping mesh axes that do not divide a dimension) and jits the init with those out_shardings.
nnx.use_eager_sharding(False)
