"""The real train step compiled ahead of time for a TPU topology on any machine, and what the compiler says about it.

libtpu (the `tpu` extra) provides compile-only devices for a named topology (`jax.experimental.topologies`); the step
is lowered on abstract state and batch carrying the mesh's shardings, so nothing is allocated. The same report works
on any devices, e.g. this machine's CPU devices (what the tests use without libtpu).

Topologies are Cloud accelerator types, `v5p-128`, or an explicit chip grid, `v5p:4x4x4`. In accelerator types the
number counts TensorCores on v5p (two per chip, one device in megacore mode) and chips on v5e and v6e.
"""

import dataclasses
import math
import re

import jax
import numpy as np

from lumiere_jax import stages, validation
from lumiere_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import flops as flops_lib, state as state_lib, step as step_lib

_GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Generation:
  hbm_gib: int  # per chip, Cloud TPU documentation
  cores_per_chip: int  # what the number of an accelerator type counts per chip
  grid_dims: int  # 2-D torus (v5e, v6e) or 3-D (v5p)


GENERATIONS = {'v5e': Generation(16, 1, 2), 'v5p': Generation(95, 2, 3), 'v6e': Generation(32, 1, 2)}


@dataclasses.dataclass(frozen=True)
class Topology:
  generation: str
  grid: tuple[int, ...]  # chips along each torus axis

  @property
  def hbm_bytes(self) -> int:
    return GENERATIONS[self.generation].hbm_gib * 2 ** 30

  @property
  def libtpu_name(self) -> str:
    return f'{self.generation}:{"x".join(map(str, self.grid))}'


def parse_topology(name: str) -> Topology:
  """`v5p-128` (an accelerator type, power-of-two slices get Cloud's grid) or `v5p:4x4x4` (explicit)."""
  match = re.fullmatch(r'(v\w+?)(?:-(\d+)|:(\d+(?:x\d+)+))', name)
  if not match or match.group(1) not in GENERATIONS:
    raise ValueError(f'--topology={name!r}: expected <generation>-<count> or <generation>:<AxB[xC]> with a '
                     f'generation in {sorted(GENERATIONS)}, e.g. v5p-128 or v5e:8x8')
  generation, count, grid = match.groups()
  dims = GENERATIONS[generation].grid_dims
  if grid:
    shape = tuple(int(n) for n in grid.split('x'))
    if len(shape) != dims or min(shape) < 1:
      raise ValueError(f'--topology={name!r}: {generation} grids have {dims} positive dimensions')
    return Topology(generation, shape)
  cores, per_chip = int(count), GENERATIONS[generation].cores_per_chip
  chips = cores // per_chip
  if cores % per_chip or chips < 1 or chips & (chips - 1):
    raise ValueError(f'--topology={name!r}: {generation}-N needs N = {per_chip} x a power of two chips; give an '
                     f'explicit grid ({generation}:AxB{"xC" if dims == 3 else ""}) otherwise')
  doublings = chips.bit_length() - 1  # spread over the axes as evenly as possible, longer axes last
  shape = sorted(2 ** (doublings // dims + (axis < doublings % dims)) for axis in range(dims))
  return Topology(generation, tuple([n for n in shape if n > 1] + [n for n in shape if n == 1]))  # v5p-8: 2x2x1


def topology_devices(topology: Topology) -> list:
  """libtpu's compile-only devices for `topology`; a clear error without the `tpu` extra."""
  try:
    import libtpu  # noqa: F401  (only its presence matters: JAX loads it)
  except ImportError as e:
    raise RuntimeError("ahead-of-time TPU compilation needs libtpu: pip install 'lumiere_jax[tpu]'") from e
  from jax.experimental import topologies
  return list(topologies.get_topology_desc(platform='tpu', topology_name=topology.libtpu_name).devices)


def abstract_batch(config, mesh: jax.sharding.Mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch `data/pipeline.py` yields for `config`, as shapes split over the data-parallel axes."""
  b, length, size = config.train.batch_size, config.text.max_length, config.model.image_size
  stage = stages.of(config)
  shapes = dict(video=((b, stage.example_frames(config), size, size, 3), np.uint8), token_mask=((b, length), bool))
  if config.data.text_embeddings:
    shapes['text_emb'] = ((b, length, config.text.width), np.float32)
  else:
    shapes['tokens'] = ((b, length), np.int32)
  if stage.reads_mask:
    shapes['cond_mask'] = ((*shapes['video'][0][:-1], 1), np.uint8)
  sharding = sharding_lib.batch_sharding(mesh)
  return {key: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for key, (shape, dtype) in shapes.items()}


def host_model_flops(config) -> float:
  """What MFU counts: FLOPs of one global train step without recomputation, from the step lowered (not compiled) on
  one host CPU device. Compile-only TPU devices report no cost for a lowering, and a platform kernel (splash, cuDNN)
  would count as nothing; on the host the step runs XLA attention and no context-parallel exchanges, which are the
  model's FLOPs. Known even when the compiler refuses the step."""
  host = flops_lib.without_remat(config)  # a copy
  for axis in mesh_lib.MESH_AXES:
    host.mesh[axis] = 1
  mesh = mesh_lib.make_mesh(host.mesh, jax.devices('cpu')[:1])
  setup = state_lib.TrainSetup.create(host, mesh)
  return flops_lib.compiled_flops(step_lib.jit_train_step(setup).lower(setup.abstract_state(),
                                                                      abstract_batch(host, mesh)))


def compile_report(config, devices) -> dict:
  """Compiles the train step for `config` on a mesh of `devices`; its per-device memory, FLOPs and replication.

  A step that cannot fit (TPU compilers refuse with RESOURCE_EXHAUSTED) gives `out_of_memory`, the compiler's words.
  """
  hosts = len({device.process_index for device in devices})
  validation.validate(config, num_devices=len(devices), num_processes=hosts, training=False)
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  setup = state_lib.TrainSetup.create(config, mesh)
  report = dict(devices=len(devices), hosts=hosts, device_kind=devices[0].device_kind, mesh=dict(mesh.shape),
                parameters=sum(math.prod(s.shape) for s in setup.spec.shapes.values()),
                trainable=sum(math.prod(setup.spec.shapes[k].shape) for k in setup.trainable),
                replication=sharding_lib.replication_report(setup.spec.shapes, setup.param_shardings))
  report['model_flops_per_device'] = host_model_flops(config) / len(devices)
  try:
    compiled = step_lib.jit_train_step(setup).lower(setup.abstract_state(), abstract_batch(config, mesh)).compile()
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    return dict(report, out_of_memory=str(e).splitlines()[0])
  memory = compiled.memory_analysis()
  # The state is donated: outputs alias arguments and count once.
  peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes +
          memory.temp_size_in_bytes + memory.generated_code_size_in_bytes)
  return dict(report, bytes_per_device=peak, argument_bytes=memory.argument_size_in_bytes,
              temp_bytes=memory.temp_size_in_bytes, flops_per_device=flops_lib.compiled_flops(compiled))


def describe(name: str, topology: Topology, report: dict) -> str:
  """`compile_report` for `topology` as the lines `lumiere-aot` prints."""
  hbm = topology.hbm_bytes
  replication = report['replication']
  largest = ', '.join(replication['largest_replicated'][:3]) or 'none'
  lines = [f'{name}: {report["devices"]} chips ({report["device_kind"]}, grid {topology.libtpu_name}), '
           f'{report["hosts"]} hosts; mesh {report["mesh"]}']
  if 'out_of_memory' in report:
    lines.append(f'  memory per chip: DOES NOT FIT in {hbm / _GIB:.0f} GiB HBM ({report["out_of_memory"]})')
  else:
    fits = 'fits' if report['bytes_per_device'] <= hbm else 'DOES NOT FIT'
    lines += [
        f'  memory per chip: {report["bytes_per_device"] / _GIB:.2f} GiB of {hbm / _GIB:.0f} GiB HBM -> {fits} '
        f'(state and batch {report["argument_bytes"] / _GIB:.2f} GiB, temporaries {report["temp_bytes"] / _GIB:.2f} '
        'GiB)',
        f'  FLOPs per step: {report["flops_per_device"]:.3e} per chip, '
        f'{report["flops_per_device"] * report["devices"]:.3e} in all (XLA cost analysis)']
  lines.append(f'  model FLOPs per step (no recomputation, what MFU counts): {report["model_flops_per_device"]:.3e} '
               'per chip' + (f'; compiled / model {report["flops_per_device"] / report["model_flops_per_device"]:.2f}'
                             if 'flops_per_device' in report else ''))
  lines.append(f'  parameters: {report["parameters"]:,} ({report["trainable"]:,} trainable); '
               f'{replication["replicated_fraction"]:.0%} of parameter bytes replicated on every chip; '
               f'largest: {largest}')
  return '\n'.join(lines)
