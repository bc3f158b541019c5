"""Test session set-up: 8 fake CPU devices and a persistent compile cache, before JAX starts its backend."""

import os
import pathlib

import jax

_CACHE = pathlib.Path(__file__).resolve().parent.parent / '.cache' / 'jax'

jax.config.update('jax_num_cpu_devices', 8)
jax.config.update('jax_compilation_cache_dir', str(_CACHE))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
os.environ.setdefault('LUMIERE_DATA_DIR', str(_CACHE.parent / 'data'))
