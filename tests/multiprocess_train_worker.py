"""One process of `test_multiprocess_train.py`: `lumiere-train` (same flags), with one compile cache for all processes.

JAX keys a CPU executable in its persistent compile cache by each process's own view of the topology, and only
process 0 writes entries: process 1 would recompile every program while process 0 loads it from the cache, and gloo's
fixed 30 s rendezvous at the first collective fails when that compile takes longer (a loaded 2-core machine). Keying
by device kinds instead, as JAX does for backends without a topology description, lets both load the same entries.
"""

from jax._src import cache_key

from lumiere_jax.cli import train

cache_key._hash_accelerator_config = cache_key._hash_devices

if __name__ == '__main__':
  train.run()
