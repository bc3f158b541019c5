"""Input pipeline throughput: clips/s of the full grain pipeline against a bare PyAV decode of the same records.

    python benchmarks/data_pipeline.py [--clips 48] [--shapes 16x64x64,80x128x128] [--workers 1,2]

The full pipeline decodes, samples frames at data.fps, crops, resizes, normalises, tokenizes and batches
(`make_train_iterator` with `data.num_workers` = W). The bare loop decodes every frame of each record's video in W
processes and does nothing else. Both read the same synthetic shards (clips of T + T/4 frames at H x W) in the same
run; the ratio is the pipeline's overhead beyond decoding (goal: >= 0.9).
"""

import argparse
import concurrent.futures
import itertools
import multiprocessing
import tempfile
import time

import grain
from absl import flags

from lumiere_jax import config as config_lib
from lumiere_jax.data import pipeline, records, synthetic, video


def _decode_all(data: bytes) -> int:
  return len(video.decode_video(records.decode_record(data)['video'])[0])


def bare_clips_per_s(paths: list[str], workers: int) -> float:
  source = grain.sources.ArrayRecordDataSource(paths)
  items = [source[i] for i in range(len(source))]
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
    list(pool.map(_decode_all, items[:workers]))  # start the workers
    start = time.perf_counter()
    list(pool.map(_decode_all, items))
    return len(items) / (time.perf_counter() - start)


def pipeline_clips_per_s(config, clips: int, batch: int) -> float:
  iterator = pipeline.make_train_iterator(config)
  next(iterator)  # worker start-up and the first batch are not timed
  steps = max(1, clips // batch)
  start = time.perf_counter()
  for _ in range(steps):
    next(iterator)
  seconds = time.perf_counter() - start
  iterator.close()
  return steps * batch / seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--clips', type=int, default=48, help='clips per measurement')
  parser.add_argument('--shapes', default='16x64x64,80x128x128', help='frames x height x width, comma-separated')
  parser.add_argument('--workers', default='1,2')
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # grain workers read absl flags
  batch = 4
  print(f'{"shape":>11} {"workers":>7} {"pipeline clips/s":>16} {"bare decode clips/s":>19} {"ratio":>6}')
  with tempfile.TemporaryDirectory() as directory:
    for shape, workers in itertools.product(args.shapes.split(','), map(int, args.workers.split(','))):
      frames, height, _ = map(int, shape.split('x'))
      paths = synthetic.ensure_synthetic_dataset(directory, num_clips=args.clips + batch, image_size=height,
                                                 num_frames=frames, fps=16)
      config = config_lib.load('stage=base,size=tiny')
      config.unlock()
      config.model.image_size, config.model.num_frames = height, frames
      config.train.batch_size = batch
      config.data.update(dict(source=f'{paths[0].rsplit("-", 3)[0]}-*.array_record', num_workers=workers))
      piped = pipeline_clips_per_s(config, args.clips, batch)
      bare = bare_clips_per_s(paths, workers)
      print(f'{shape:>11} {workers:>7} {piped:>16.1f} {bare:>19.1f} {piped / bare:>6.2f}', flush=True)


if __name__ == '__main__':
  main()
