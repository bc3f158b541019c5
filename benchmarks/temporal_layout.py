"""Temporal convs, resamplers and self-attention in the two layouts of `model.temporal_layout`, timed in one process:

    python benchmarks/temporal_layout.py [--shapes 1x16x32x32x128,1x8x16x16x256] [--repeats 5] [--matmul_n 1024]

'transpose' folds pixels into batch around each op (two whole-activation transposes); 'video' stays in the
(B, T, H, W, C) layout (a channel matmul per tap on frame-shifted inputs, the upsampler polyphase; attention with
the pixel axes as batch dimensions of XLA's matmuls, heads of 64 channels). Each op is timed forward + backward (a
training step's use) as the median of interleaved repeats, and reported in ms and in units of a square float32
matmul timed in the same process, so figures compare across machines.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lumiere_jax.models import layers, stunet

OPS = dict(
    conv=lambda c: stunet.ConvInflation(c, 8, groups=8, dtype=jnp.float32, rngs=nnx.Rngs(0)).time_conv,
    downsample=lambda c: stunet.TemporalDownsample(c, dtype=jnp.float32, rngs=nnx.Rngs(0)),
    upsample=lambda c: stunet.TemporalUpsample(c, dtype=jnp.float32, rngs=nnx.Rngs(0)),
    attention=lambda c: layers.Attention(c, c, max(c // 64, 1), dtype=jnp.float32, rngs=nnx.Rngs(0),
                                         implementation='xla'))


def op_fn(kind: str, layout: str, channels: int, frames: int):
  """A jitted forward + backward of one temporal op in `layout` on (B*T, H, W, C)."""
  module = OPS[kind](channels)
  if kind == 'conv':  # the bare temporal conv of a (2+1)D inflation block

    def apply(m, x):
      if layout == 'video':
        return stunet.in_video_layout(lambda v: stunet.shifted_conv(m, v), x, frames)
      return stunet.over_time(m, x, frames)
  elif kind == 'attention':  # the self-attention of a temporal attention block

    def apply(m, x):
      if layout == 'video':
        return stunet.in_video_layout(m.over_frames, x, frames)
      return stunet.over_time(lambda y: m(y, y), x, frames)
  else:
    module.layout = layout

    def apply(m, x):
      return m(x, frames=frames)
  graph, params = nnx.split(module)
  loss = lambda p, x: jnp.sum(apply(nnx.merge(graph, p), x) ** 2)  # noqa: E731
  return jax.jit(jax.grad(loss, argnums=(0, 1))), params


def median_seconds(fns: dict, repeats: int) -> dict:
  """Median wall time per call of each (fn, args), calls interleaved so load drifts hit all alike."""
  for fn, args in fns.values():
    jax.block_until_ready(fn(*args))  # compile
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, args) in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shapes', default='1x16x32x32x128,2x8x16x16x256,1x32x64x64x32',
                      help='comma-separated BxTxHxWxC')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--matmul_n', type=int, default=1024)
  args = parser.parse_args()
  n = args.matmul_n
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {jax.device_count()} devices; '
        f'unit: one float32 {n}x{n} matmul; forward + backward, median of {args.repeats}')
  print('| shape BxTxHxWxC | op | transpose ms | video ms | transpose / matmul | video / matmul | '
        'video / transpose |')
  print('|---|---|---|---|---|---|---|')
  for shape in args.shapes.split(','):
    b, t, h, w, c = (int(v) for v in shape.split('x'))
    x = jax.random.normal(jax.random.PRNGKey(1), (b * t, h, w, c), jnp.float32)
    for kind in OPS:
      fns = {'matmul': (jax.jit(lambda m: m @ m), (a,))}
      for layout in ('transpose', 'video'):
        fn, params = op_fn(kind, layout, c, t)
        fns[layout] = (fn, (params, x))
      s = median_seconds(fns, args.repeats)
      print(f'| {shape} | {kind} | {1e3 * s["transpose"]:.2f} | {1e3 * s["video"]:.2f} | '
            f'{s["transpose"] / s["matmul"]:.2f} | {s["video"] / s["matmul"]:.2f} | '
            f'{s["video"] / s["transpose"]:.2f} |', flush=True)


if __name__ == '__main__':
  main()
