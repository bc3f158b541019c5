"""The persistent XLA compile cache of every command-line tool, on by default: a rerun or a resume loads its compiled
steps from disk instead of compiling them again (minutes at `paper` size).

Where: a directory already configured wins (`$JAX_COMPILATION_CACHE_DIR`, which JAX reads itself, or
`jax.config.update` by a caller such as the tests), else `$LUMIERE_CACHE_DIR/jax`, else `~/.cache/lumiere_jax/jax`.
Off with `--nocompile_cache` or `LUMIERE_COMPILE_CACHE=0`.
"""

import os
import pathlib

import jax

DEFAULT_ROOT = '~/.cache/lumiere_jax'
OFF_VALUES = ('0', 'false', 'off', 'no')


def cache_dir(environ=os.environ) -> pathlib.Path | None:
  """The directory this job compiles into, None when the cache is off by `LUMIERE_COMPILE_CACHE`."""
  if environ.get('LUMIERE_COMPILE_CACHE', '').strip().lower() in OFF_VALUES:
    return None
  if environ.get('JAX_COMPILATION_CACHE_DIR'):
    return pathlib.Path(environ['JAX_COMPILATION_CACHE_DIR'])
  return pathlib.Path(environ.get('LUMIERE_CACHE_DIR') or DEFAULT_ROOT).expanduser() / 'jax'


def configure(enabled: bool = True, environ=os.environ) -> pathlib.Path | None:
  """Points JAX's persistent compile cache at `cache_dir()` (before anything compiles); returns it, or None when off
  (`enabled` False: the --compile_cache flag)."""
  directory = cache_dir(environ) if enabled else None
  if directory is not None and jax.config.jax_compilation_cache_dir:
    return pathlib.Path(jax.config.jax_compilation_cache_dir)
  jax.config.update('jax_compilation_cache_dir', str(directory) if directory else None)
  return directory
