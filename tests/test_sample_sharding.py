"""Sampling split over a mesh's data-parallel devices (`sample.generate` / `make_sampler` with `mesh`), and the
memory check before sampling."""

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from lumiere_jax import sample as sample_lib
from lumiere_jax.parallel import mesh as mesh_lib
from micro import micro_config, one_device_setup, trained_looking_params
from test_ssr import sr_config

PROMPTS = ['a red circle moving right', 'a blue square moving up', 'a green ball']  # 3: not a multiple of 8


def _model(config):
  return config, one_device_setup(config).spec, trained_looking_params(config)


@pytest.fixture(scope='module')
def base():
  return _model(micro_config('base'))


@pytest.fixture(scope='module')
def mesh():
  return mesh_lib.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices())


def _sharded_and_plain(model, mesh):
  config, spec, params = model
  plain = sample_lib.generate(spec, params, config, PROMPTS, seed=5)
  placed = jax.device_put(params, NamedSharding(mesh, P()))
  sampler = sample_lib.make_sampler(spec, config, mesh=mesh)
  sharded = sample_lib.generate(spec, placed, config, PROMPTS, seed=5, sampler=sampler, mesh=mesh)
  assert sharded.shape == plain.shape == (3, *sample_lib.clip_shape(config))
  assert len({clip.tobytes() for clip in plain}) == 3  # the prompts (and their noise) differ
  # uint8 of float32 computed in another order: at most a rounding step apart
  np.testing.assert_allclose(sharded.astype(int), plain.astype(int), atol=1)
  assert np.mean(sharded == plain) > 0.99
  return placed, sampler


@pytest.mark.parametrize('config', [
    pytest.param(lambda: sr_config('ssr'), id='ssr-lowres-padded'),
    pytest.param(lambda: micro_config('conditional'), id='conditional-given-per-prompt')])
def test_per_prompt_inputs_are_padded_and_split_too(config, mesh):
  _sharded_and_plain(_model(config()), mesh)


def _padded_batch_args(config, mesh):
  """A padded batch of 8 (token ids, mask, seed) laid out as `generate` lays it out over the mesh."""
  tokens = np.zeros((8, config.text.max_length), np.int32)
  batch = NamedSharding(mesh, P(mesh_lib.BATCH_AXES))
  return (jax.device_put(tokens, batch), jax.device_put(tokens.astype(bool), batch),
          jax.device_put(jax.random.PRNGKey(0), NamedSharding(mesh, P())))


def test_three_prompts_on_eight_devices_give_the_unsharded_videos(base, mesh):
  assert mesh_lib.data_parallel_size(mesh) == 8
  placed, sampler = _sharded_and_plain(base, mesh)
  config = base[0]
  # the padded batch of 8 is split one clip per device, in, through every denoising step, and out
  compiled = sampler.compile(placed, *_padded_batch_args(config, mesh))
  clips = (8, *sample_lib.clip_shape(config))
  assert compiled.step.output_shardings.shard_shape(clips)[0] == 1
  assert compiled.finish.output_shardings.shard_shape(clips)[0] == 1


def test_a_batch_over_the_device_memory_is_refused_before_sampling(base, mesh, monkeypatch):
  config, spec, params = base
  placed = jax.device_put(params, NamedSharding(mesh, P()))
  sampler = sample_lib.make_sampler(spec, config, mesh=mesh)
  compiled = sampler.compile(placed, *_padded_batch_args(config, mesh))
  figures = sample_lib.memory_needed(compiled)
  needed = sum(figures.values())
  assert needed > 0 and figures['arguments'] > 0
  monkeypatch.setattr(sample_lib, 'device_memory_limit', lambda device: needed - 1)
  with pytest.raises(ValueError, match=r'a batch of 3 clips \(padded to 8 .*GiB per device .*smaller '
                                       r'--config.chunk_size'):
    sample_lib.generate(spec, placed, config, PROMPTS, sampler=sampler, mesh=mesh)
  assert sampler.compile(placed, *_padded_batch_args(config, mesh)) is compiled  # kept per shapes and layouts
  monkeypatch.setattr(sample_lib, 'device_memory_limit', lambda device: needed)
  sample_lib.check_memory(compiled, mesh.local_devices[0], 3, 8)  # exactly the limit fits


def test_cpu_reports_no_memory_limit():
  assert sample_lib.device_memory_limit(jax.devices()[0]) is None
