"""Logical axis names -> mesh shardings, the replication check, and global batches.

Parameters carry logical names (`embed`, `mlp`, `heads`, ...); `config.mesh.axis_rules` maps them to mesh axes. A
mesh axis is dropped from a dimension it does not divide (tiny models on big meshes stay valid) and never used twice
in one spec; what that leaves replicated is measured by `replication_report` and bounded by
`config.mesh.max_replicated_fraction`.
"""

from collections.abc import Mapping, Sequence
import math

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from lumiere_jax.parallel.mesh import BATCH_AXES

Rules = Mapping[str, tuple[str, ...]]


def rules_from_config(axis_rules: Sequence) -> dict[str, tuple[str, ...]]:
  """`(('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ...)` -> {'batch': ('data', 'fsdp'), 'embed': ('fsdp',)}."""
  rules = {}
  for logical, mesh_axes in axis_rules:
    rules[logical] = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
  return rules


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: jax.sharding.Mesh,
                    rules: Rules) -> P:
  """The PartitionSpec for one array: each dim's mesh axes that exist, are > 1, unused, and divide the dim."""
  used, spec = set(), []
  for name, dim in zip(names, shape, strict=True):
    axes = []
    for axis in rules.get(name, ()) if name else ():
      size = mesh.shape.get(axis, 1)
      if size > 1 and axis not in used and dim % (math.prod(mesh.shape[a] for a in axes) * size) == 0:
        axes.append(axis)
    used.update(axes)
    spec.append(tuple(axes) if len(axes) > 1 else (axes[0] if axes else None))
  return P(*spec)


def tree_shardings(shapes: Mapping, names: Mapping, mesh: jax.sharding.Mesh, rules: Rules) -> dict:
  """Flat {path: ShapeDtypeStruct} and {path: logical names} -> {path: NamedSharding}."""
  return {path: NamedSharding(mesh, logical_to_spec(names[path], shape.shape, mesh, rules))
          for path, shape in shapes.items()}


def replication_report(shapes: Mapping, shardings: Mapping) -> dict:
  """Bytes of parameters replicated on every device (no mesh axis splits them) and the largest such parameters."""
  total = replicated = 0
  largest = []
  for path, shape in shapes.items():
    nbytes = math.prod(shape.shape) * np.dtype(shape.dtype).itemsize
    total += nbytes
    if all(axis is None for axis in shardings[path].spec):
      replicated += nbytes
      largest.append((nbytes, path))
  largest.sort(reverse=True)
  return dict(total_bytes=total, replicated_bytes=replicated,
              replicated_fraction=replicated / max(total, 1), largest_replicated=[p for _, p in largest[:5]])


def check_replication(report: dict, mesh: jax.sharding.Mesh, max_fraction: float) -> None:
  """Fails when a multi-device mesh leaves more than `max_fraction` of parameter bytes fully replicated."""
  if mesh.size > 1 and report['replicated_fraction'] > max_fraction:
    raise ValueError(
        f'{report["replicated_fraction"]:.1%} of parameter bytes are replicated on all {mesh.size} devices, over '
        f'config.mesh.max_replicated_fraction={max_fraction}; largest: {report["largest_replicated"]}. Adjust '
        'config.mesh.axis_rules or the mesh shape.')


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data-parallel axes, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Each process's slice of the batch -> global arrays split over the data-parallel axes."""
  sharding = batch_sharding(mesh)
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for key, value in local_batch.items()}


def param_shardings(spec, mesh: jax.sharding.Mesh, axis_rules: Sequence) -> dict:
  """path -> NamedSharding of every parameter of a `models.params.ModelSpec`, from the config's logical rules."""
  return tree_shardings(spec.shapes, spec.logical_names, mesh, rules_from_config(axis_rules))


def place_params(arrays: Mapping[str, np.ndarray], spec, mesh: jax.sharding.Mesh, axis_rules: Sequence) -> dict:
  """Host arrays (a subset of `spec`'s parameters) on `mesh`, each in its parameter's dtype and logical sharding."""
  shardings = param_shardings(spec, mesh, axis_rules)
  return {k: jax.device_put(np.asarray(v, spec.shapes[k].dtype), shardings[k]) for k, v in arrays.items()}
