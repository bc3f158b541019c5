"""DeepFloyd IF end to end at tiny size: a random diffusers IF U-Net -> `lumiere-convert deepfloyd` -> base stage
trained on top of it (IF weights frozen, bit-identical afterwards) -> DDPM samples -> export."""

import json

import jax
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from lumiere_jax import backbones, convert, inference, models, stages, validation
from lumiere_jax import config as config_lib
from lumiere_jax import export as export_lib
from lumiere_jax import sample as sample_lib
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.train import main as train_main, state as state_lib

PRESET = 'if_tiny'


def _config(stage: str, data_dir, **overrides):
  """`stage` with the tiny IF backbone, shrunk for a CPU test (4 frames: one temporal downsampling)."""
  config = config_lib.load(f'stage={stage},size=tiny,backbone={PRESET}')
  config.unlock()
  config.model.update(num_frames=4, norm_groups=8, num_heads=2)
  config.text.update(depth=1, num_heads=2, max_length=16)
  config.data.update(synthetic_clips=8, synthetic_dir=str(data_dir))
  config.train.update(batch_size=2, steps=20, warmup_steps=2, log_every=10, checkpoint_every=20)
  config.sample.update(steps=3, prompts=('a red circle moving right',))
  config.mesh.data = 1
  for path, value in overrides.items():
    section, name = path.split('.')
    config[section][name] = value
  config.lock()
  return config


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """(tmp dir, diffusers state dict, export dir): a random tiny IF U-Net saved by diffusers and converted."""
  tmp = tmp_path_factory.mktemp('deepfloyd')
  torch.manual_seed(0)
  unet = UNet2DConditionModel(**backbones.IF_PRESETS[PRESET][0], sample_size=16)
  with torch.no_grad():  # zero-initialised layers would hide a wrong mapping
    for parameter in unet.parameters():
      parameter.add_(0.05 * torch.randn_like(parameter))
  unet.save_pretrained(tmp / 'IF' / 'unet', safe_serialization=True)
  state = {k: v.numpy() for k, v in unet.state_dict().items()}
  manifest = convert.convert(tmp / 'IF', tmp / 'export', _config('t2i', tmp / 'data'))
  assert manifest['weights'] == 'converted' and manifest['stage'] == 't2i'
  return tmp, state, tmp / 'export'


def test_conversion_keeps_every_weight_and_the_architecture(converted):
  tmp, state, export = converted
  config, params = export_lib.load_export(export, mesh_lib.make_mesh(dict(data=1, fsdp=1, tensor=1),
                                                                     jax.devices()[:1]))
  assert config.model.backbone == 'deepfloyd_if' and config.model.image_size == 16
  assert tuple(config.model.deepfloyd.block_out_channels) == (32, 64)
  unet = {k.removeprefix('unet.'): np.asarray(v) for k, v in params.items() if k.startswith('unet.')}
  assert len(unet) == len(state)
  conv = state['down_blocks.0.resnets.0.conv1.weight']
  np.testing.assert_array_equal(unet['down_blocks.0.resnets.0.conv1.kernel'], conv.transpose(2, 3, 1, 0))
  assert convert.is_diffusers_folder(tmp / 'IF') and not convert.is_diffusers_folder(export)


def test_base_trains_on_converted_if_with_its_weights_frozen(converted, tmp_path):
  _, _, export = converted
  config = _config('base', tmp_path / 'data', **{'model.init_from': str(export)})
  validation.validate(config, num_devices=1, num_processes=1)
  assert stages.of(config).inflated and config.train.trainable == 'temporal'
  result = train_main.train(config, tmp_path / 'base', devices=jax.devices()[:1])
  exported = export_lib.load_export(export, mesh_lib.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1]))[1]
  frozen = jax.device_get(result.state['frozen'])
  assert set(frozen) == {k for k in exported}  # every IF and text weight is frozen, no temporal one
  for name, value in frozen.items():
    np.testing.assert_array_equal(value, np.asarray(exported[name]), err_msg=name)
  trained = jax.device_get(result.state['params'])
  assert trained and all('temporal' in name for name in trained)
  assert np.isfinite(float(np.sum([np.sum(v) for v in trained.values()])))

  # Sampling with IF's DDPM walk and learned variance, then an export of the base run.
  params = state_lib.inference_params(result.state)
  videos = sample_lib.generate(models.model_spec(config), params, config, ['a blue square moving up'])
  assert videos.shape == (1, 4, 16, 16, 3) and videos.dtype == np.uint8
  manifest = export_lib.export(tmp_path / 'base', tmp_path / 'base-export')
  assert manifest['stage'] == 'base' and json.loads((tmp_path / 'base-export' / 'config.json').read_text())[
      'model']['backbone'] == 'deepfloyd_if'
  loaded = inference.load(tmp_path / 'base-export', devices=jax.devices()[:1])
  assert loaded.config.model.deepfloyd.to_dict() == config.model.deepfloyd.to_dict()


def test_init_from_reads_the_diffusers_folder_directly(converted):
  tmp, state, _ = converted
  _, step, params = inference.load_params(tmp / 'IF', mesh=None)
  assert step == 0 and len(params) == len(state) and all(k.startswith('unet.') for k in params)
