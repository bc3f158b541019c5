"""Train-step utilisation, reported two ways from one run:

    python benchmarks/train_step_mfu.py --sizes tiny,small [--batch 4] [--dtype bfloat16] [--stage base]
        [--remat nothing_saveable]

- MFU: model FLOPs per step (`lumiere_jax/train/flops.py`: XLA's cost analysis of the step lowered *without*
  rematerialisation: what the model needs, not what the compiled program recomputes) per second, over the chip's
  published dense bf16 peak (`lumiere_jax/parallel/chips.py`; not reported for chips without one, such as CPUs);
- HFU: the compiled step's FLOPs (recomputation included) per second, over a large square matmul timed in the same
  process on the same device ("utilisation on this machine", comparable across machines).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax import config as config_lib
from lumiere_jax import validation
from lumiere_jax.models import checks as model_checks
from lumiere_jax.data import tokenizers
from lumiere_jax.parallel import chips, mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import flops as flops_lib, state as state_lib


def _timed(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # warm-up (compile)
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def matmul_flops_per_s(dtype, n: int) -> float:
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  seconds = _timed(jax.jit(lambda x: x @ x), a, repeats=10)
  return 2 * n ** 3 / seconds


def _config(size: str, stage: str, batch: int | None, dtype: str, remat: str):
  config = config_lib.load(f'stage={stage},size={size}')
  config.unlock()
  config.model.update(dtype=dtype, remat_policy=remat)
  if batch:
    config.train.batch_size = batch
  config.lock()
  return config


def train_step_flops_per_s(size: str, stage: str, batch: int | None, dtype: str, remat: str, repeats: int):
  config = _config(size, stage, batch, dtype, remat)
  validation.validate(config, training=False)  # random weights: the step costs the same
  mesh = mesh_lib.make_mesh(config.mesh)
  setup = state_lib.TrainSetup.create(config, mesh)
  state = setup.init()
  frames = 1 if stage == 't2i' else config.model.num_frames
  b, s = config.train.batch_size, config.model.image_size
  tokens, mask = tokenizers.build_tokenizer(config.text).encode(['a red circle moving left'] * b)
  batch_np = dict(video=np.random.default_rng(0).integers(0, 256, (b, frames, s, s, 3), np.uint8),
                  tokens=tokens, token_mask=mask)
  batch_arrays = sharding_lib.global_batch(batch_np, mesh)
  compiled, flops = flops_lib.compile_train_step(setup, state, batch_arrays)
  state, _ = compiled(state, batch_arrays)  # warm-up
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(repeats):
    state, out = compiled(state, batch_arrays)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - start) / repeats
  return dict(size=size, stage=stage, batch=b, frames=frames, res=s, gflop=flops.compiled_per_device / 1e9,
              model_gflop=flops.model / 1e9, step_s=seconds, achieved=flops.compiled_per_device / seconds,
              model_per_device=flops.model_per_device / seconds)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='tiny,small')
  parser.add_argument('--stage', default='base', choices=['t2i', 'base'])
  parser.add_argument('--batch', type=int, default=None, help='global batch override (default: the size\'s)')
  parser.add_argument('--dtype', default='float32', choices=list(model_checks.DTYPES))
  parser.add_argument('--remat', default='none', help='model.remat_policy: none or a jax.checkpoint_policies name')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--matmul_n', type=int, default=None, help='matmul side (default 2048 CPU, 8192 GPU/TPU)')
  args = parser.parse_args()
  device = jax.devices()[0]
  n = args.matmul_n or (2048 if device.platform == 'cpu' else 8192)
  peak = matmul_flops_per_s(jnp.dtype(args.dtype), n)
  spec = chips.spec_peak_flops(device)
  spec_note = f'spec peak {spec / 1e12:.0f} TFLOP/s bf16' if spec else 'no spec peak known (MFU not reported)'
  print(f'device: {device.device_kind} x{jax.device_count()} ({device.platform}); {spec_note}; '
        f'{args.dtype} matmul {n}x{n}: {peak / 1e9:.1f} GFLOP/s; remat {args.remat}')
  print('| size | stage | batch | clip | model GFLOP/step | compiled GFLOP/step | step time (s) | MFU (spec) | '
        'HFU (/ matmul) |')
  print('|---|---|---|---|---|---|---|---|---|')
  for size in args.sizes.split(','):
    r = train_step_flops_per_s(size, args.stage, args.batch, args.dtype, args.remat, args.repeats)
    mfu = f'{r["model_per_device"] / spec:.1%}' if spec else 'n/a'
    print(f'| {r["size"]} | {r["stage"]} | {r["batch"]} | {r["frames"]}x{r["res"]}x{r["res"]} | '
          f'{r["model_gflop"]:.1f} | {r["gflop"]:.1f} | {r["step_s"]:.3f} | {mfu} | '
          f'{r["achieved"] / peak:.2f} |', flush=True)  # compiled FLOPs are per device, as the matmul


if __name__ == '__main__':
  main()
