"""Train-step utilisation: the compiled step's achieved FLOP/s over this process's measured matmul FLOP/s.

    python benchmarks/train_step_mfu.py --sizes tiny,small [--batch 4] [--dtype bfloat16] [--stage base]

FLOPs per step come from XLA's cost analysis of the compiled step; the denominator is a large square matmul timed in
the same process on the same device, so the ratio is comparable across machines ("MFU on this machine").
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax import config as config_lib
from lumiere_jax.data import tokenizers
from lumiere_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import metrics, state as state_lib, step as step_lib


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


def train_step_flops_per_s(size: str, stage: str, batch: int | None, dtype: str, repeats: int):
  config = config_lib.load(f'stage={stage},size={size}')
  config.unlock()
  config.model.dtype = dtype
  if batch:
    config.train.batch_size = batch
  config.lock()
  config_lib.validate(config)
  mesh = mesh_lib.make_mesh(config.mesh)
  setup = state_lib.TrainSetup.create(config, mesh)
  state = setup.init()
  frames = 1 if stage == 't2i' else config.model.num_frames
  b, s = config.train.batch_size, config.model.image_size
  tokens, mask = tokenizers.build_tokenizer(config.text).encode(['a red circle moving left'] * b)
  batch_np = dict(video=np.random.default_rng(0).integers(0, 256, (b, frames, s, s, 3), np.uint8),
                  tokens=tokens, token_mask=mask)
  batch_arrays = sharding_lib.global_batch(batch_np, mesh)
  compiled = step_lib.jit_train_step(setup).lower(state, batch_arrays).compile()
  flops = metrics.compiled_flops(compiled)
  state, _ = compiled(state, batch_arrays)  # warm-up
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(repeats):
    state, out = compiled(state, batch_arrays)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - start) / repeats
  return dict(size=size, stage=stage, batch=b, frames=frames, res=s, gflop=flops / 1e9, step_s=seconds,
              achieved=flops / seconds)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='tiny,small')
  parser.add_argument('--stage', default='base', choices=['t2i', 'base'])
  parser.add_argument('--batch', type=int, default=None, help='global batch override (default: the size\'s)')
  parser.add_argument('--dtype', default='float32', choices=list(config_lib.DTYPES))
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--matmul_n', type=int, default=None, help='matmul side (default 2048 CPU, 8192 GPU/TPU)')
  args = parser.parse_args()
  device = jax.devices()[0]
  n = args.matmul_n or (2048 if device.platform == 'cpu' else 8192)
  peak = matmul_flops_per_s(jnp.dtype(args.dtype), n)
  print(f'device: {device.device_kind} x{jax.device_count()} ({device.platform}); '
        f'{args.dtype} matmul {n}x{n}: {peak / 1e9:.1f} GFLOP/s')
  print('| size | stage | batch | clip | GFLOP/step | step time (s) | achieved GFLOP/s | / matmul |')
  print('|---|---|---|---|---|---|---|---|')
  for size in args.sizes.split(','):
    r = train_step_flops_per_s(size, args.stage, args.batch, args.dtype, args.repeats)
    print(f'| {r["size"]} | {r["stage"]} | {r["batch"]} | {r["frames"]}x{r["res"]}x{r["res"]} | {r["gflop"]:.1f} | '
          f'{r["step_s"]:.3f} | {r["achieved"] / 1e9:.1f} | {r["achieved"] / peak:.2f} |', flush=True)


if __name__ == '__main__':
  main()
