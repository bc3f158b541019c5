"""Ahead-of-time compilation: topology names, the compile report on CPU devices, and `lumiere-aot` with libtpu."""

import importlib.util
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from lumiere_jax.models import layers
from lumiere_jax.train import aot
from micro import micro_config
from test_cli import MICRO, ROOT, _env

HAS_LIBTPU = importlib.util.find_spec('libtpu') is not None


@pytest.mark.parametrize('name, generation, grid', [
    ('v5p-128', 'v5p', (4, 4, 4)), ('v5p-8', 'v5p', (2, 2, 1)), ('v5p-32', 'v5p', (2, 2, 4)),
    ('v5e-256', 'v5e', (16, 16)), ('v6e-8', 'v6e', (2, 4)), ('v5p:4x4x8', 'v5p', (4, 4, 8))])
def test_topology_names_give_cloud_grids(name, generation, grid):
  topology = aot.parse_topology(name)
  assert (topology.generation, topology.grid) == (generation, grid)
  assert topology.libtpu_name == f'{generation}:{"x".join(map(str, grid))}'


@pytest.mark.parametrize('name, match', [
    ('v9-8', 'generation in'), ('v5p', 'expected'), ('v5p-12', 'power of two'), ('v5p-1', 'power of two'),
    ('v5e:2x2x2', '2 positive dimensions'), ('v5p:0x2x2', '3 positive dimensions')])
def test_bad_topology_names_are_refused_with_the_reason(name, match):
  with pytest.raises(ValueError, match=match):
    aot.parse_topology(name)


def test_compile_report_on_cpu_devices_counts_the_per_device_state_and_batch():
  config = micro_config(**{'mesh.data': 1, 'mesh.fsdp': 2})
  devices = jax.devices()[:2]
  report = aot.compile_report(config, devices)
  assert report['mesh'] == dict(data=1, fsdp=2, tensor=1) and report['hosts'] == 1
  # Independent count: each argument's shard on one device (state from the setup, batch from its shapes).
  from lumiere_jax.parallel import mesh as mesh_lib
  from lumiere_jax.train import state as state_lib
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  state = state_lib.TrainSetup.create(config, mesh).abstract_state()
  arguments = [*jax.tree.leaves(state), *aot.abstract_batch(config, mesh).values()]
  shard_bytes = sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize for x in arguments)
  assert report['argument_bytes'] == shard_bytes
  assert report['parameters'] == sum(x.size for x in jax.tree.leaves((state['params'], state['frozen'])))
  assert report['bytes_per_device'] > report['argument_bytes'] and report['flops_per_device'] > 0
  assert 0 < report['replication']['replicated_fraction'] < 0.1  # kernels split over fsdp, norms replicated
  # No remat in the micro config: the compiled step runs the model's FLOPs (to XLA's fusion-level accounting).
  assert report['model_flops_per_device'] == pytest.approx(report['flops_per_device'], rel=0.1)


def test_the_printed_report_says_whether_it_fits():
  topology = aot.parse_topology('v5e-8')
  report = dict(devices=8, device_kind='TPU v5 lite', hosts=2, mesh={'data': 8}, bytes_per_device=0,
                argument_bytes=0, temp_bytes=0, flops_per_device=1e12, model_flops_per_device=8e11, parameters=10,
                trainable=5,
                replication=dict(replicated_fraction=1.0, largest_replicated=['a.kernel']))
  assert '-> fits' in aot.describe('v5e-8', topology, dict(report, bytes_per_device=15 * 2 ** 30))
  text = aot.describe('v5e-8', topology, dict(report, bytes_per_device=17 * 2 ** 30))
  assert 'of 16 GiB HBM -> DOES NOT FIT' in text and '8.000e+12 in all' in text and 'largest: a.kernel' in text
  assert '8.000e+11 per chip; compiled / model 1.25' in text
  refused = {k: v for k, v in report.items() if k not in ('bytes_per_device', 'flops_per_device')}
  refused = aot.describe('v5e-8', topology, dict(refused, out_of_memory='RESOURCE_EXHAUSTED: 20G of temporaries'))
  assert 'DOES NOT FIT in 16 GiB' in refused and 'what MFU counts): 8.000e+11 per chip\n' in refused


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (the optional extra: pip install '.[tpu]')")
def test_lumiere_aot_compiles_the_train_step_for_a_tpu_topology():
  result = subprocess.run(
      [sys.executable, '-m', 'lumiere_jax.cli.aot', '--config', 'configs/lumiere.py:stage=base,size=tiny', *MICRO,
       '--topology', 'v5p-8'], cwd=ROOT, env=_env(ROOT / '.cache' / 'data'), capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'v5p-8: 4 chips (TPU v5, grid v5p:2x2x1), 1 hosts' in result.stdout
  assert 'GiB of 95 GiB HBM -> fits' in result.stdout and 'FLOPs per step' in result.stdout


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (the optional extra: pip install '.[tpu]')")
def test_auto_attention_compiles_to_the_splash_kernel_for_a_tpu_topology():
  """Traced under a TPU mesh on this CPU host, 'auto' attention is the Pallas splash kernel, mapped per device."""
  mesh = jax.sharding.Mesh(np.array(aot.topology_devices(aot.parse_topology('v5p-8'))), ('data',))
  graph, state = nnx.split(layers.Attention(64, 32, 2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  def abstract(shape, dtype, spec=P('data')):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))

  state = jax.tree.map(lambda a: abstract(a.shape, a.dtype, P()), state)
  x, text, mask = abstract((4, 256, 64), jnp.bfloat16), abstract((4, 77, 32), jnp.bfloat16), abstract((4, 77), bool)
  with jax.set_mesh(mesh):
    assert layers.target_platform() == 'tpu' and layers.attention_implementation('auto', jnp.bfloat16, 32) == 'splash'
    compiled = jax.jit(lambda s, *a: nnx.merge(graph, s)(*a)).lower(state, x, text, mask).compile()
  assert 'tpu_custom_call' in compiled.as_text()


def test_lumiere_aot_without_libtpu_says_how_to_get_it(monkeypatch):
  monkeypatch.setitem(sys.modules, 'libtpu', None)  # import fails as if it were not installed
  with pytest.raises(RuntimeError, match=r"needs libtpu: pip install 'lumiere_jax\[tpu\]'"):
    aot.topology_devices(aot.parse_topology('v5p-8'))
