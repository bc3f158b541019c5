"""Test session set-up, before JAX starts its backend: 8 fake CPU devices, a persistent compile cache, and XLA's
fastest-compiling CPU code generation (subprocesses of the tests inherit it)."""

import os
import pathlib

import jax

# The tests' shapes are tiny, so compiling dominates their run time: LLVM without its optimisation passes compiles
# the CPU programs ~40% faster, with the same semantics.
os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
_CACHE = pathlib.Path(__file__).resolve().parent.parent / '.cache' / 'jax'

jax.config.update('jax_num_cpu_devices', 8)
jax.config.update('jax_compilation_cache_dir', str(_CACHE))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
os.environ.setdefault('LUMIERE_DATA_DIR', str(_CACHE.parent / 'data'))


def pytest_configure(config):
  config.addinivalue_line('markers', 'starts_first: a test of minutes, moved to the front of the run')


def pytest_collection_modifyitems(items):
  """`starts_first` tests first: pytest-xdist hands tests out in this order, so a test of minutes overlaps the rest of
  the suite on the other worker instead of running alone at the end."""
  items.sort(key=lambda item: item.get_closest_marker('starts_first') is None)
