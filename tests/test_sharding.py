"""Logical axis rules -> mesh shardings, the replication check and mesh validation."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lumiere_jax.parallel import mesh as mesh_lib, sharding as sharding_lib

RULES = sharding_lib.rules_from_config((('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('mlp', 'tensor')))


@pytest.fixture(scope='module')
def mesh():
  return mesh_lib.make_mesh(dict(data=2, fsdp=2, tensor=2))


def test_mesh_fills_the_free_axis():
  assert mesh_lib.mesh_shape(dict(data=-1, fsdp=4, tensor=1), 8) == dict(data=2, fsdp=4, tensor=1)
  with pytest.raises(ValueError, match='multiply to 4'):
    mesh_lib.mesh_shape(dict(data=2, fsdp=2, tensor=1), 8)
  with pytest.raises(ValueError, match='only one axis'):
    mesh_lib.mesh_shape(dict(data=-1, fsdp=-1, tensor=1), 8)


def test_mesh_axes_are_auto(mesh):
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_rules_map_logical_names(mesh):
  assert sharding_lib.logical_to_spec((None, None, 'embed', 'mlp'), (3, 3, 32, 64), mesh, RULES) == \
      P(None, None, 'fsdp', 'tensor')
  assert sharding_lib.logical_to_spec(('batch', None), (8, 5), mesh, RULES) == P(('data', 'fsdp'), None)


def test_axes_that_do_not_divide_are_dropped(mesh):
  # 3 input channels cannot be split over fsdp=2; 6 over data*fsdp=4 keeps only `data`.
  assert sharding_lib.logical_to_spec(('embed', 'mlp'), (3, 64), mesh, RULES) == P(None, 'tensor')
  assert sharding_lib.logical_to_spec(('batch',), (6,), mesh, RULES) == P('data')


def test_a_mesh_axis_is_used_once_per_array(mesh):
  rules = dict(RULES, mlp=('fsdp',))
  assert sharding_lib.logical_to_spec(('embed', 'mlp'), (32, 32), mesh, rules) == P('fsdp', None)


def test_replication_report_and_check(mesh):
  shapes = {'big': jax.ShapeDtypeStruct((64, 64), np.float32), 'norm': jax.ShapeDtypeStruct((64,), np.float32)}
  names = {'big': ('embed', 'mlp'), 'norm': ('norm',)}
  shardings = sharding_lib.tree_shardings(shapes, names, mesh, RULES)
  report = sharding_lib.replication_report(shapes, shardings)
  assert report['replicated_bytes'] == 64 * 4
  assert report['replicated_fraction'] == pytest.approx(64 / (64 * 64 + 64))
  sharding_lib.check_replication(report, mesh, max_fraction=0.05)
  with pytest.raises(ValueError, match='max_replicated_fraction'):
    sharding_lib.check_replication(report, mesh, max_fraction=0.001)


def test_global_batch_is_split_over_data_axes(mesh):
  batch = sharding_lib.global_batch({'video': np.arange(8 * 3, dtype=np.float32).reshape(8, 3)}, mesh)
  assert batch['video'].shape == (8, 3)
  assert batch['video'].sharding.spec == P(('data', 'fsdp'))
  np.testing.assert_array_equal(np.asarray(batch['video']), np.arange(24).reshape(8, 3))
