"""The device mesh named by `config.mesh` (axes `data`, `fsdp`, `tensor`, and `context` when it is > 1).

Axes are `AxisType.Auto`: shardings come from the logical rules and `jax.jit` in/out shardings, and the compiler
propagates the rest (current `jax.make_mesh` would default to Explicit axes).

`context` (context parallelism) splits one clip's frames over devices, for clips whose activations do not fit one
device (the SSR's 1024x1024 windows): the model constrains its frame axis to it (`stunet.shard_frames`) when traced
under the mesh, and the temporal convs exchange one-frame halos. It is left out of the mesh at size 1, so runs
without it keep the three-axis mesh.
"""

import math

import jax
from jax.experimental import mesh_utils
import numpy as np

from lumiere_jax import stages
from lumiere_jax.models.stunet import CONTEXT_AXIS

MESH_AXES = ('data', 'fsdp', CONTEXT_AXIS, 'tensor')  # `tensor` innermost: its all-reduces need the nearest devices
# Axes a batch is split over (data parallelism, including FSDP's).
BATCH_AXES = ('data', 'fsdp')


def _context_size(mesh_config) -> int:
  """`mesh.context`: devices one clip's frames are split over (1 for a mesh config without the field)."""
  size = mesh_config.get(CONTEXT_AXIS, 1)
  if not isinstance(size, int) or size < 1:
    raise ValueError(f'config.mesh.{CONTEXT_AXIS}={size!r}: must be a positive integer (no -1 fill)')
  return size


def mesh_shape(mesh_config, num_devices: int) -> dict[str, int]:
  """Axis sizes with the single -1 filled in; ValueError naming `mesh.<axis>` when they cannot match the devices."""
  context = _context_size(mesh_config)
  sizes = {axis: context if axis == CONTEXT_AXIS else int(mesh_config[axis]) for axis in MESH_AXES
           if axis != CONTEXT_AXIS or context > 1}
  for axis, size in sizes.items():
    if size == 0 or size < -1:
      raise ValueError(f'config.mesh.{axis}={size}: axis sizes must be positive or -1 (fill)')
  free = [axis for axis, size in sizes.items() if size == -1]
  if len(free) > 1:
    raise ValueError(f'config.mesh: only one axis may be -1, got {free}')
  known = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if num_devices % known:
      raise ValueError(f'config.mesh.{free[0]}=-1: {num_devices} devices are not divisible by the other axes '
                       f'({known})')
    sizes[free[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(f'config.mesh: axis sizes {sizes} multiply to {math.prod(sizes.values())}, '
                     f'but there are {num_devices} devices')
  return sizes


def make_mesh(mesh_config, devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else devices
  sizes = mesh_shape(mesh_config, len(devices))
  shape = tuple(sizes.values())
  try:
    grid = mesh_utils.create_device_mesh(shape, devices=devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(shape)  # e.g. CPU or a device subset: plain order is as good as any
  return jax.sharding.Mesh(grid, tuple(sizes), axis_types=(jax.sharding.AxisType.Auto,) * len(sizes))


def data_parallel_size(mesh: jax.sharding.Mesh) -> int:
  return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def config_errors(config, num_devices: int, num_processes: int):
  """(field, problem) when `config.mesh` cannot be laid over the devices or the batch cannot be split over it."""
  try:
    sizes = mesh_shape(config.mesh, num_devices)
  except ValueError as e:
    yield 'mesh', str(e).removeprefix('config.mesh')
    return
  for logical, axes in config.mesh.axis_rules:
    for axis in (axes,) if isinstance(axes, str) else axes:
      if axis not in MESH_AXES:
        yield 'mesh.axis_rules', f'{logical!r} maps to unknown mesh axis {axis!r} (axes: {MESH_AXES})'
  if not 0 <= config.mesh.max_replicated_fraction <= 1:
    yield 'mesh.max_replicated_fraction', f'{config.mesh.max_replicated_fraction!r} must be in [0, 1]'
  data_parallel = math.prod(sizes[a] for a in BATCH_AXES)
  if config.train.batch_size % data_parallel:
    yield 'train.batch_size', (f'{config.train.batch_size} is not divisible by the data-parallel mesh size '
                               f'{data_parallel} (mesh.data x mesh.fsdp)')
  if config.train.batch_size % num_processes:
    yield 'train.batch_size', f'{config.train.batch_size} is not divisible by the {num_processes} processes'
  yield from _context_errors(config, sizes.get(CONTEXT_AXIS, 1))


def _context_errors(config, context: int):
  """`mesh.context` must split every training clip's frames evenly, in a stage whose model mixes frames."""
  if context == 1:
    return
  stage = stages.of(config)
  if not stage.inflated:
    yield 'mesh.context', (f'{context}: stage {stage.name!r} trains on single frames; context parallelism splits '
                           'the frames of a clip (stages base, ssr, conditional)')
    return
  frames = stage.example_frames(config)
  source = 'sr.window' if stage.windowed else 'model.num_frames'
  if frames % context:
    yield 'mesh.context', f'{context} does not divide the {frames} frames of a training clip ({source})'
