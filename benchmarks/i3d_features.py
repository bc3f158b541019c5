"""FVD feature throughput: I3D clips/s of the jitted extractor (TF1 resize + Kinetics-400 I3D) on every device.

    python benchmarks/i3d_features.py [--batch 8] [--frames 16] [--size 224] [--repeats 3]

Inputs are random uint8 clips of frames x size x size (224 skips no work: the resize still runs), the batch split
over all local devices. The first call (compile) is untimed; the best of --repeats timed calls is reported.
"""

import argparse
import time

import jax
import numpy as np

from lumiere_jax.eval import i3d


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()

  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('batch',))
  features = i3d.I3DFeatures(mesh)
  clips = np.random.default_rng(0).integers(0, 256, (args.batch, args.frames, args.size, args.size, 3), np.uint8)
  start = time.perf_counter()
  features(clips)
  compile_s = time.perf_counter() - start
  best = float('inf')
  for _ in range(args.repeats):
    start = time.perf_counter()
    features(clips)
    best = min(best, time.perf_counter() - start)
  device = jax.devices()[0]
  print(f'device: {device.device_kind} x{jax.device_count()} ({device.platform})')
  print('| batch | clip | first call (s) | batch time (s) | clips/s |')
  print('|---|---|---|---|---|')
  print(f'| {args.batch} | {args.frames}x{args.size}x{args.size} | {compile_s:.1f} | {best:.2f} | '
        f'{args.batch / best:.2f} |')


if __name__ == '__main__':
  main()
