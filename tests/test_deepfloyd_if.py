"""DeepFloyd IF U-Net: parity with diffusers' UNet2DConditionModel, the weights loader, STUNet inflation."""

import copy
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from lumiere_jax.models import params
from lumiere_jax.models.deepfloyd_if import IFUNet, IFUNetConfig, Inflation
from lumiere_jax.models.diffusers_weights import load_unet

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')

# Stage I-like: IF's block types and options at tiny widths. attention_head_dim per block also covers diffusers
# indexing the up blocks' head dims in down-block order.
STAGE_I = dict(
    sample_size=16, in_channels=3, out_channels=6, block_out_channels=(32, 64, 64), layers_per_block=2,
    down_block_types=('ResnetDownsampleBlock2D', 'SimpleCrossAttnDownBlock2D', 'SimpleCrossAttnDownBlock2D'),
    up_block_types=('SimpleCrossAttnUpBlock2D', 'SimpleCrossAttnUpBlock2D', 'ResnetUpsampleBlock2D'),
    mid_block_type='UNetMidBlock2DSimpleCrossAttn', attention_head_dim=(8, 16, 32), cross_attention_dim=32,
    encoder_hid_dim=24, norm_num_groups=8, act_fn='gelu', resnet_time_scale_shift='scale_shift',
    addition_embed_type='text', addition_embed_type_num_heads=4, cross_attention_norm='group_norm')
# Stage II-like: 6 input channels (noisy + upsampled low-res), noise-augmentation level as class_embed_type
# 'timestep', per-block layer counts, wider time embedding, skipped time activation, output scale factors.
STAGE_II = dict(
    STAGE_I, in_channels=6, layers_per_block=(1, 2, 1), class_embed_type='timestep',
    down_block_types=('ResnetDownsampleBlock2D', 'ResnetDownsampleBlock2D', 'SimpleCrossAttnDownBlock2D'),
    up_block_types=('SimpleCrossAttnUpBlock2D', 'ResnetUpsampleBlock2D', 'ResnetUpsampleBlock2D'),
    attention_head_dim=16, time_embedding_dim=96, time_embedding_act_fn='gelu', resnet_skip_time_act=True,
    resnet_out_scale_factor=1 / 0.7071, mid_block_scale_factor=1 / 0.7071)
TEXT_LEN = 7  # != any pixel count: diffusers pads the text mask by the pixel count only when the lengths differ


def diffusers_unet(config: dict, seed: int):
  """A random diffusers U-Net with every weight perturbed (zero or one-initialised weights would hide mix-ups)."""
  torch.manual_seed(seed)
  model = diffusers.UNet2DConditionModel(**config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model


def saved(model, folder, **kwargs):
  model.save_pretrained(folder, safe_serialization=True, **kwargs)
  return folder


@functools.lru_cache(maxsize=None)
def spec_of(cfg: IFUNetConfig, inflation=None, dtype=jnp.float32, remat_policy='none') -> params.ModelSpec:
  """Cached: tracing a model's init takes seconds."""
  return params.ModelSpec.from_builder(
      lambda: IFUNet(cfg, dtype=dtype, inflation=inflation, remat_policy=remat_policy, rngs=nnx.Rngs(0)))


def run(cfg: IFUNetConfig, flat, *args, inflation=None, dtype=jnp.float32, remat_policy='none', **kwargs):
  spec = spec_of(cfg, inflation, dtype, remat_policy)
  with jax.default_matmul_precision('highest'):
    return np.asarray(jax.jit(lambda p, a, k: spec.merge(p)(*a, **k))(flat, args, kwargs))


def random_inputs(seed: int, *, batch=2, frames=2, size=16, channels=3, cond_channels=0, text_width=24):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, frames, size, size, channels), np.float32)
  cond = rng.standard_normal((batch, frames, size, size, cond_channels), np.float32) if cond_channels else None
  t = rng.uniform(0, 1000, batch).astype(np.float32)
  text = rng.standard_normal((batch, TEXT_LEN, text_width), np.float32)
  mask = rng.uniform(size=(batch, TEXT_LEN)) < 0.6
  mask[0, :3] = True
  return x, cond, t, text, mask, rng.uniform(0, 1000, batch).astype(np.float32)


def reference(model, x, cond, t, text, mask, labels):
  """diffusers on the frames as a batch of images, text and levels repeated per frame; back to (B, T, H, W, C)."""
  batch, frames = x.shape[:2]
  full = x if cond is None else np.concatenate([x, cond], axis=-1)
  per_frame = lambda a: None if a is None else torch.from_numpy(np.repeat(a, frames, axis=0))  # noqa: E731
  with torch.no_grad():
    out = model(torch.from_numpy(full.reshape(batch * frames, *full.shape[2:]).transpose(0, 3, 1, 2).copy()),
                per_frame(t), per_frame(text), class_labels=per_frame(labels),
                encoder_attention_mask=per_frame(mask)).sample.numpy()
  return out.transpose(0, 2, 3, 1).reshape(*x.shape[:-1], -1)


@pytest.mark.parametrize('stage, seed, only_cross, masked', [
    ('I', 0, False, True), ('I', 1, False, True), ('II', 2, False, True),
    # diffusers cannot take a text mask with only_cross_attention: AttnAddedKVProcessor2_0 pads the mask by the
    # pixel count for the pixel keys, which that mode drops, and the shapes no longer broadcast. Unmasked only.
    ('II', 3, True, False)])
def test_output_equals_diffusers(tmp_path, stage, seed, only_cross, masked):
  config = dict(STAGE_I if stage == 'I' else STAGE_II, only_cross_attention=only_cross)
  model = diffusers_unet(config, seed)
  cfg, flat = load_unet(saved(model, tmp_path / 'unet'))
  x, cond, t, text, mask, labels = random_inputs(seed, cond_channels=3 if stage == 'II' else 0)
  labels = labels if stage == 'II' else None
  ours = run(cfg, flat, x, t, text, mask if masked else np.ones_like(mask), conditioning=cond, class_labels=labels)
  ref = reference(model, x, cond, t, text, mask if masked else None, labels)
  assert ours.shape == (2, 2, 16, 16, 6)
  err = np.abs(ours - ref).max()
  assert err < 1e-4, f'max abs difference {err} (output scale {np.abs(ref).max()})'
  if masked:  # the mask matters: a different one changes the output
    ref_other = reference(model, x, cond, t, text, np.ones_like(mask), labels)
    assert np.abs(ref_other - ref).max() > 1e-3


@pytest.fixture(scope='module')
def stage_i(tmp_path_factory):
  """A saved stage I-like U-Net, its tensors, and what `load_unet` makes of it."""
  model = diffusers_unet(STAGE_I, seed=5)
  folder = saved(model, tmp_path_factory.mktemp('pipeline') / 'unet')
  tensors = safetensors.numpy.load_file(folder / 'diffusion_pytorch_model.safetensors')
  return model, folder, tensors, load_unet(folder.parent)


def rewrite(folder, tensors, tmp_path):
  out = tmp_path / 'edited'
  out.mkdir()
  (out / 'config.json').write_text((folder / 'config.json').read_text())
  safetensors.numpy.save_file(tensors, out / 'diffusion_pytorch_model.safetensors')
  return out


@pytest.mark.parametrize('edit, message', [
    (lambda t: t.pop('down_blocks.1.attentions.0.add_k_proj.weight'),
     r'missing tensor down_blocks\.1\.attentions\.0\.add_k_proj\.weight'),
    (lambda t: t.update({'down_blocks.0.extra.weight': np.zeros((2, 2), np.float32)}),
     r'unexpected tensor down_blocks\.0\.extra\.weight'),
    (lambda t: t.update({'mid_block.resnets.1.conv2.weight': np.zeros((64, 64, 1, 1), np.float32)}),
     r'tensor mid_block\.resnets\.1\.conv2\.weight has shape \(64, 64, 1, 1\)'),
])
def test_loader_refuses_mismatched_tensors_by_name(stage_i, tmp_path, edit, message):
  _, folder, tensors, _ = stage_i
  tensors = dict(tensors)
  edit(tensors)
  with pytest.raises(ValueError, match=message):
    load_unet(rewrite(folder, tensors, tmp_path))


def test_loader_reads_sharded_and_fp16_folders(stage_i, tmp_path):
  model, _, _, (cfg, flat) = stage_i
  sharded = saved(model, tmp_path / 'sharded', max_shard_size='40KB')
  assert len(json.loads((sharded / 'diffusion_pytorch_model.safetensors.index.json').read_text())['weight_map'])
  cfg_sharded, flat_sharded = load_unet(sharded)
  assert cfg_sharded == cfg and flat_sharded.keys() == flat.keys()
  assert all(np.array_equal(flat_sharded[k], flat[k]) for k in flat)
  half_model = copy.deepcopy(model).to(torch.float16)
  for kwargs in ({}, {'max_shard_size': '40KB'}):
    half = saved(half_model, tmp_path / f'fp16{len(kwargs)}', variant='fp16', **kwargs)
    weights = [p.name for p in half.iterdir() if p.name != 'config.json']
    assert weights and all('fp16' in name for name in weights)  # only the fp16 variant is there
    _, flat_half = load_unet(half)
    assert flat_half.keys() == flat.keys()
    for k in flat:
      assert flat_half[k].dtype == np.float32
      np.testing.assert_array_equal(flat_half[k], flat[k].astype(np.float16).astype(np.float32))


def test_loader_refuses_pickle_only_folder(stage_i, tmp_path):
  model = stage_i[0]
  model.save_pretrained(tmp_path / 'unet', safe_serialization=False)
  assert list((tmp_path / 'unet').glob('*.bin'))
  with pytest.raises(ValueError, match=r'only pickle weights .*diffusion_pytorch_model\.bin'):
    load_unet(tmp_path)


@pytest.mark.parametrize('key, value', [('down_block_types', ['CrossAttnDownBlock2D'] * 3),
                                        ('class_embed_type', 'projection'), ('time_embedding_type', 'fourier'),
                                        ('cross_attention_norm', 'layer_norm')])
def test_config_refuses_what_if_does_not_use(key, value):
  with pytest.raises(ValueError, match=f'{key}={value!r}'.replace('[', r'\[').replace(']', r'\]')):
    IFUNetConfig.from_diffusers({**STAGE_I, key: value})
  with pytest.raises(ValueError, match='unknown diffusers UNet config keys: \\[\'some_new_option\'\\]'):
    IFUNetConfig.from_diffusers({**STAGE_I, 'some_new_option': 1})


def is_temporal(path: str) -> bool:
  return any(part.startswith('temporal') for part in path.split('.'))


# A two-level model keeps the (traced) inits cheap: (2+1)D inflation at level 0, temporal attention at level 1.
TINY = IFUNetConfig.from_diffusers(dict(
    STAGE_I, block_out_channels=(32, 32), layers_per_block=1, attention_head_dim=16,
    down_block_types=('ResnetDownsampleBlock2D', 'SimpleCrossAttnDownBlock2D'),
    up_block_types=('SimpleCrossAttnUpBlock2D', 'ResnetUpsampleBlock2D')))
INFLATION = Inflation(temporal_downsample=(True,), temporal_attention_depth=2, num_heads=4, norm_groups=8)


@functools.lru_cache(maxsize=None)
def init(inflation):
  return jax.jit(lambda: params.flat_params(IFUNet(TINY, dtype=jnp.float32, inflation=inflation,
                                                   rngs=nnx.Rngs(0))))()


def perturbed(flat, seed):
  rng = np.random.default_rng(seed)
  return {k: v + 0.1 * rng.standard_normal(v.shape, np.float32) for k, v in flat.items()}


def test_inflated_paths_are_the_2d_paths_plus_temporal_ones(stage_i):
  cfg = stage_i[3][0]
  inflation = Inflation(temporal_downsample=(True, False), temporal_attention_depth=2, num_heads=4, norm_groups=8)
  flat_2d, flat_3d = spec_of(cfg).shapes, spec_of(cfg, inflation).shapes
  temporal = {k for k in flat_3d if is_temporal(k)}
  assert temporal and not any(is_temporal(k) for k in flat_2d)
  assert {k: flat_3d[k] for k in flat_3d if k not in temporal} == flat_2d
  assert {'.'.join(k.split('.')[:3]) for k in temporal} == {
      'down_blocks.0.temporal', 'down_blocks.1.temporal', 'down_blocks.2.temporal', 'down_blocks.0.temporal_downsample',
      'mid_block.temporal.0', 'mid_block.temporal.1', 'up_blocks.0.temporal', 'up_blocks.1.temporal',
      'up_blocks.2.temporal', 'up_blocks.1.temporal_upsample'}
  with pytest.raises(ValueError, match='one flag per spatial resize'):
    IFUNet(cfg, dtype=jnp.float32, inflation=INFLATION, rngs=nnx.Rngs(0))


def test_inflated_model_at_init_equals_2d_model_on_every_2k_th_frame():
  init_2d, init_3d = init(None), init(INFLATION)
  # Temporal modules draw from their own stream: the spatial init is the same with or without them.
  assert all(np.array_equal(init_3d[k], init_2d[k]) for k in init_2d)
  spatial = perturbed(init_2d, 0)  # any spatial weights: the property rests on the temporal init alone
  x, _, t, text, mask, _ = random_inputs(7, batch=1, frames=4)
  video = run(TINY, {**init_3d, **spatial}, x, t, text, mask, inflation=INFLATION)
  frames = run(TINY, spatial, x, t, text, mask)  # the 2-D model treats frames independently
  for f in range(0, 4, INFLATION.temporal_factor):
    np.testing.assert_allclose(video[:, f], frames[:, f], atol=1e-5)
  assert not np.allclose(video[:, 1], frames[:, 1], atol=1e-3)


def test_bf16_and_remat_track_float32_with_gradients():
  flat = perturbed(init(INFLATION), 1)  # temporal blocks active, not at their identity init
  x, _, t, text, mask, _ = random_inputs(8, batch=1, frames=4)
  exact = run(TINY, flat, x, t, text, mask, inflation=INFLATION)
  low = run(TINY, flat, x, t, text, mask, inflation=INFLATION, dtype=jnp.bfloat16, remat_policy='nothing_saveable')
  assert low.dtype == np.float32
  assert np.abs(low - exact).max() < 0.05 * np.abs(exact).max()
  spec = spec_of(TINY, INFLATION, jnp.bfloat16, 'nothing_saveable')
  grads = jax.jit(jax.grad(lambda p: jnp.mean(spec.merge(p)(x, t, text, mask) ** 2)))(flat)
  assert all(np.isfinite(g).all() for g in grads.values())
  assert all(np.abs(grads[k]).max() > 0 for k in grads if k.endswith('time_conv.kernel'))
