"""A T5 named by `text.architecture` instead of a checkpoint: what reads only shapes (ahead-of-time compiles, size
tables) needs no T5 folder or tokenizer file; training still names the missing checkpoint."""

import math

import jax
import pytest
from flax import nnx

from lumiere_jax import config as config_lib
from lumiere_jax import models, validation
from lumiere_jax.models import params as params_lib, t5
from lumiere_jax.train import aot

# T5-v1.1-XXL as published (google/t5-v1_1-xxl config.json), independent of models/t5.py.
XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, buckets=32)
TINY = t5.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4,
                   feed_forward_proj='gated-gelu')


def _no_files(config):
  assert config.text.encoder == 't5' and not config.text.checkpoint and config.text.tokenizer == ''
  return config


def test_the_if_presets_validate_without_t5_files_for_shapes_but_not_for_training():
  config = _no_files(config_lib.load('stage=base,size=paper,backbone=if_i_xl'))
  validation.validate(config, num_devices=64, num_processes=16, training=False)
  with pytest.raises(config_lib.ConfigError, match=r'config\.text\.checkpoint: .*training reads its weights'):
    validation.validate(config, num_devices=64, num_processes=16)


def test_the_named_architecture_is_t5_v1_1_xxl():
  text = _no_files(config_lib.load('stage=t2i,size=paper,backbone=if_i_xl')).text
  spec = params_lib.ModelSpec.from_builder(lambda: t5.T5Encoder(text, dtype='bfloat16', remat='none',
                                                                rngs=nnx.Rngs(0)))
  x = XXL
  per_layer = 4 * x['d_model'] * x['num_heads'] * x['d_kv'] + 3 * x['d_model'] * x['d_ff'] + 2 * x['d_model']
  want = x['vocab_size'] * x['d_model'] + x['buckets'] * x['num_heads'] + x['num_layers'] * per_layer + x['d_model']
  assert sum(math.prod(s.shape) for s in spec.shapes.values()) == want == 4_762_310_656


@pytest.mark.parametrize('overrides, field', [
    ({'text.architecture': 't5-unknown'}, 'config.text.architecture:'),
    ({'text.architecture': ''}, 'config.text.checkpoint:'),
    ({'text.width': 1024}, 'config.text.width: 1024'),
])
def test_shape_only_validation_names_a_bad_text_section(overrides, field):
  config = config_lib.with_overrides(config_lib.load('stage=t2i,size=paper,backbone=if_i_m'), overrides)
  with pytest.raises(config_lib.ConfigError, match=field):
    validation.validate(config, num_devices=8, num_processes=1, training=False)


def test_tiny_if_train_step_compiles_with_a_named_t5_and_no_files(monkeypatch):
  monkeypatch.setitem(t5.ARCHITECTURES, 'tiny-test', TINY)
  config = config_lib.load('stage=base,size=tiny,backbone=if_tiny')
  config.unlock()
  config.text.update(encoder='t5', architecture='tiny-test', width=TINY.d_model, max_length=8)
  config.model.update(num_frames=4, norm_groups=8, num_heads=2, init_from='none')
  config.train.batch_size = 2
  config.mesh.update(data=1, fsdp=2)
  config.lock()
  _no_files(config)
  report = aot.compile_report(config, jax.devices()[:2])
  text_params = (TINY.vocab_size * TINY.d_model + 32 * TINY.num_heads + TINY.d_model +
                 TINY.num_layers * (4 * TINY.d_model * TINY.num_heads * TINY.d_kv + 3 * TINY.d_model * TINY.d_ff +
                                    2 * TINY.d_model))
  shapes = models.model_spec(config).shapes
  assert sum(math.prod(s.shape) for k, s in shapes.items() if k.startswith('text_encoder.')) == text_params
  assert report['parameters'] == sum(math.prod(s.shape) for s in shapes.values())
  assert report['flops_per_device'] > 0 and report['bytes_per_device'] > report['argument_bytes'] > 0
  with pytest.raises(config_lib.ConfigError, match=r'config\.text\.checkpoint:'):
    validation.validate(config, num_devices=2, num_processes=1)
