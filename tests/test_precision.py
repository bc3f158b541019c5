"""bfloat16 compute (the default from size `small` up) trains like float32: parameters, moments and EMA stay float32,
the loss stays finite and follows the float32 run."""

import jax
import numpy as np
import pytest

from lumiere_jax import config as config_lib
from lumiere_jax.data import synthetic, tokenizers
from lumiere_jax.parallel import sharding as sharding_lib
from lumiere_jax.train import step as step_lib

from micro import micro_config, one_device_setup

STEPS = 50


def _losses(dtype: str, batch: dict) -> tuple[list[float], dict]:
  config = micro_config('base', **{'model.dtype': dtype, 'train.steps': STEPS, 'train.warmup_steps': 5})
  setup = one_device_setup(config)
  state = setup.init()
  step = step_lib.jit_train_step(setup)
  arrays = sharding_lib.global_batch(batch, setup.mesh)
  losses = []
  for _ in range(STEPS):
    state, metrics = step(state, arrays)
    losses.append(float(metrics['loss']))
  return losses, state


@pytest.fixture(scope='module')
def batch():
  config = micro_config('base')
  rng = np.random.default_rng(0)
  clips, captions = zip(*[synthetic.make_clip(rng, config.model.image_size, config.model.num_frames)[:2]
                          for _ in range(config.train.batch_size)])
  tokens, mask = tokenizers.build_tokenizer(config.text).encode(list(captions))
  return dict(video=np.stack([clip[:config.model.num_frames] for clip in clips]), tokens=tokens, token_mask=mask)


def test_small_and_paper_default_to_bfloat16_compute():
  assert config_lib.load('stage=base,size=tiny').model.dtype == 'float32'
  assert {config_lib.load(f'stage={stage},size={size}').model.dtype
          for stage in ('t2i', 'base') for size in ('small', 'paper')} == {'bfloat16'}


def test_bfloat16_training_stays_finite_and_close_to_float32(batch):
  fp32, _ = _losses('float32', batch)
  bf16, state = _losses('bfloat16', batch)
  assert np.all(np.isfinite(bf16))
  # Same data, seeds and noise: the two runs differ by rounding only. The loss is compared over the last 10 steps.
  assert abs(np.mean(bf16[-10:]) - np.mean(fp32[-10:])) <= 0.05 * np.mean(fp32[-10:])
  assert np.mean(fp32[-10:]) < np.mean(fp32[:10])  # and both actually train
  kinds = {leaf.dtype for part in ('params', 'frozen', 'ema', 'opt_state') for leaf in jax.tree.leaves(state[part])
           if leaf.dtype.kind == 'f'}
  assert kinds == {np.dtype('float32')}
