"""Sizes of the DeepFloyd IF backbones inflated into the STUNet: parameters (IF's frozen, temporal trained) and the
FLOPs of one denoiser call per clip, from XLA's cost analysis of the lowered forward pass (nothing is allocated or
compiled, so paper shapes run on a CPU machine).

    python benchmarks/deepfloyd_sizes.py [--presets if_i_m,if_i_l,if_i_xl,if_ii_m,if_ii_l] [--size paper]

Stage I presets are measured as the base stage (a whole clip of `model.num_frames`), stage II presets as the SSR
(one MultiDiffusion window of `sr.window` frames at 256x256).
"""

import argparse
import math

import jax
import jax.numpy as jnp

from lumiere_jax import backbones, models
from lumiere_jax import config as config_lib


def measure(preset: str, size: str) -> dict:
  stage = 'ssr' if backbones.IF_PRESETS[preset][2] else 'base'
  config = config_lib.load(f'stage={stage},size={size},backbone={preset}')  # T5 shapes from text.architecture
  spec = models.model_spec(config)
  unet = {k: v for k, v in spec.shapes.items() if k.startswith('unet.')}
  temporal = sum(math.prod(v.shape) for k, v in unet.items() if '.temporal' in k)
  total = sum(math.prod(v.shape) for v in unet.values())
  m = config.model
  frames = config.sr.window if stage == 'ssr' else m.num_frames
  x = jax.ShapeDtypeStruct((1, frames, m.image_size, m.image_size, m.in_channels), jnp.float32)
  text = jax.ShapeDtypeStruct((1, config.text.max_length, config.text.width), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, config.text.max_length), jnp.bool_)
  level = jax.ShapeDtypeStruct((1,), jnp.int32)
  extra = {}
  if m.cond_channels:
    extra = dict(conditioning=jax.ShapeDtypeStruct((*x.shape[:-1], m.cond_channels), jnp.float32),
                 conditioning_level=level)
  abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in spec.shapes.items()}

  def forward(params, x, level, text, mask, **extra):
    return spec.merge(params)(x, level, text, mask, **extra)

  cost = jax.jit(forward).lower(abstract, x, level, text, mask, **extra).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return dict(preset=preset, stage=stage, clip=f'{frames}x{m.image_size}x{m.image_size}', if_params=total - temporal,
              temporal=temporal, tflops=float(cost['flops']) / 1e12)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--presets', default='if_i_m,if_i_l,if_i_xl,if_ii_m,if_ii_l')
  parser.add_argument('--size', default='paper')
  args = parser.parse_args()
  print('| preset | stage | clip | IF parameters (frozen) | temporal parameters | forward TFLOPs per clip |')
  print('|---|---|---|---|---|---|')
  for preset in args.presets.split(','):
    r = measure(preset, args.size)
    print(f'| {r["preset"]} | {r["stage"]} | {r["clip"]} | {r["if_params"] / 1e9:.3f} B | {r["temporal"] / 1e6:.0f} M '
          f'| {r["tflops"]:.1f} |', flush=True)


if __name__ == '__main__':
  main()
