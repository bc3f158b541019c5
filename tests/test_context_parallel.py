"""Context parallelism (`mesh.context`): one clip's frames split over devices give the unsharded model's outputs and
gradients, through halo exchanges rather than gathers of the clip; bad `mesh.context` values are named."""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from lumiere_jax import models
from lumiere_jax.models import params as params_lib, stunet
from lumiere_jax.parallel import mesh as mesh_lib
from micro import micro_config
from test_ssr import SR

MESH = dict(data=2, fsdp=1, tensor=1, context=4)
FRAMES = 16  # 4 per device
COLLECTIVE = re.compile(r' (all-gather|collective-permute|all-to-all|all-reduce|reduce-scatter)(?:-start)?\(')


@functools.cache
def model_of(stage: str, **overrides) -> tuple[params_lib.ModelSpec, dict]:
  """The micro model of `stage` and random parameters (so zero-initialised branches act too)."""
  config = micro_config(stage, **overrides)
  spec = params_lib.ModelSpec.from_builder(lambda: models.build_model(config, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  return spec, {k: (0.2 * rng.standard_normal(s.shape)).astype(np.float32) for k, s in sorted(spec.shapes.items())}


def clip_inputs(frames: int, size: int, conditioned: bool) -> dict:
  """Two clips (one per `data` shard), their noise levels and captions, a cotangent of the output; with
  `conditioned`, the SR model's conditioning clip and its noise level."""
  rng = np.random.default_rng(1)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
  clip = (MESH['data'], frames, size, size, 3)
  inputs = dict(x=normal(*clip), logsnr=np.array([-2.0, 3.0], np.float32), text=normal(MESH['data'], 8, 32),
                mask=np.arange(8)[None] < np.array([[3], [8]]), cotangent=normal(*clip))
  if conditioned:
    inputs.update(conditioning=normal(*clip), conditioning_level=np.array([4.0, 1.0], np.float32))
  return inputs


def loss_fn(spec):
  """(params, inputs) -> (<model output, cotangent>, output), and its gradient (the model's vector-Jacobian product)
  with respect to the parameters and the noisy clip."""
  def loss(params, x, inputs):
    extra = {k: inputs[k] for k in ('conditioning', 'conditioning_level') if k in inputs}
    out = spec.merge(params)(x, inputs['logsnr'], inputs['text'], inputs['mask'], **extra)
    return jnp.vdot(out, inputs['cotangent']), out
  grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  return lambda params, inputs: grad(params, inputs['x'], inputs)


def run_sharded(spec, params, inputs):
  """The loss, output and gradients under the context-parallel mesh, and the compiled program's text.

  Parameters are replicated and the inputs split over `data` only, as the train step's batch: the model's own
  constraints split the frames.
  """
  mesh = mesh_lib.make_mesh(MESH, jax.devices()[:8])
  params = jax.device_put(params, NamedSharding(mesh, P()))
  inputs = jax.device_put(inputs, NamedSharding(mesh, P('data')))
  with jax.set_mesh(mesh):
    compiled = jax.jit(loss_fn(spec)).lower(params, inputs).compile()
  return jax.device_get(compiled(params, inputs)), compiled.as_text()


def collectives(hlo: str) -> dict[str, int]:
  found = COLLECTIVE.findall(hlo)
  return {name: found.count(name) for name in set(found)}


# The SSR (temporal convs only) in the layout 'auto' takes everywhere today; the base STUNet (temporal resamplers and
# attention too) in the video layout.
@pytest.mark.parametrize('stage, layout', [('ssr', 'transpose'), ('base', 'video')])
def test_context_parallel_forward_and_gradients_equal_the_unsharded_model(stage, layout):
  overrides = {**(SR if stage == 'ssr' else {}), 'model.temporal_layout': layout}
  if stage == 'ssr':
    overrides['sr.window'] = FRAMES
  spec, params = model_of(stage, **overrides)
  config = micro_config(stage, **overrides)
  inputs = clip_inputs(FRAMES, config.model.image_size, conditioned=stage == 'ssr')
  (loss, out), grads = jax.device_get(jax.jit(loss_fn(spec))(params, inputs))
  ((sharded_loss, sharded_out), sharded_grads), hlo = run_sharded(spec, params, inputs)
  np.testing.assert_allclose(sharded_out, out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(sharded_loss, loss, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(sharded_grads), jax.tree.leaves(grads), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  ops = collectives(hlo)
  assert ops.get('collective-permute', 0) >= 2, ops  # the halos, forward and backward
  m = config.model
  frame_sizes = [(m.image_size // 2 ** level) ** 2 * m.channels * mult  # one frame of one clip, per level
                 for level, mult in enumerate(m.channel_mults)]
  clip_sizes = [size * FRAMES // 2 ** sum(m.temporal_downsample[:level]) for level, size in enumerate(frame_sizes)]
  if stage == 'ssr':  # temporal convs only: nothing gathers the clip's frames, devices send their neighbours frames
    assert 'all-gather' not in ops and 'all-to-all' not in ops, ops
    assert 0 < max(elements(hlo, 'collective-permute')) <= max(frame_sizes) < min(clip_sizes) // MESH['context']
  else:  # temporal self-attention gathers its keys and values over the frames, at the coarsest level only
    assert 0 < max(elements(hlo, 'all-gather')) <= clip_sizes[-1] < min(clip_sizes[:-1])


def elements(hlo: str, collective: str) -> list[int]:
  """Elements of each `collective` op's result in the compiled program."""
  return [math.prod(map(int, filter(None, dims.split(','))))
          for dims in re.findall(rf'= \w+\[([\d,]*)\]\S* {collective}(?:-start)?\(', hlo)]


def test_mesh_has_a_context_axis_only_when_it_splits_frames():
  devices = jax.devices()[:8]
  assert mesh_lib.make_mesh(MESH, devices).shape == dict(data=2, fsdp=1, context=4, tensor=1)
  assert mesh_lib.make_mesh(dict(MESH, context=1, data=-1), devices).shape == dict(data=8, fsdp=1, tensor=1)
  with pytest.raises(ValueError, match=r'mesh.context=-1: must be a positive integer'):
    mesh_lib.mesh_shape(dict(MESH, context=-1), 8)


def test_frames_are_left_alone_without_a_context_axis_or_when_it_does_not_divide_them():
  video = jnp.zeros((2, 6, 4, 4, 3))
  assert stunet.shard_frames(video) is video  # no mesh in effect
  with jax.set_mesh(mesh_lib.make_mesh(MESH, jax.devices()[:8])):
    assert stunet.shard_frames(video) is video  # 4 does not divide 6 frames


def mesh_errors(stage, num_devices=8, **overrides):
  config = micro_config(stage, **{**(SR if stage == 'ssr' else {}), **overrides})
  return list(mesh_lib.config_errors(config, num_devices, 1))


def test_context_dividing_the_training_clip_is_valid():
  assert mesh_errors('base', **{'mesh.context': 8}) == []
  assert mesh_errors('ssr', **{'mesh.context': 2, 'mesh.data': -1}) == []


@pytest.mark.parametrize('stage, overrides, num_devices, match', [
    ('ssr', {'mesh.context': 8}, 8, r'8 does not divide the 4 frames of a training clip \(sr.window\)'),
    ('base', {'mesh.context': 3, 'mesh.data': -1}, 6, r'3 does not divide the 8 frames .*\(model.num_frames\)'),
    ('t2i', {'mesh.context': 2, 'mesh.data': -1}, 8, "stage 't2i' trains on single frames"),
    ('ssr', {'mesh.context': 0}, 8, 'context=0: must be a positive integer'),
])
def test_bad_context_values_are_named(stage, overrides, num_devices, match):
  errors = mesh_errors(stage, num_devices, **overrides)
  assert len(errors) == 1 and errors[0][0].startswith('mesh'), errors
  assert re.search(match, errors[0][1]), errors
