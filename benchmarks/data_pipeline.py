"""Input pipeline throughput: clips/s of the full grain pipeline against a bare PyAV decode of the same records.

    python benchmarks/data_pipeline.py [--seconds 3] [--shapes 16x64x64,80x128x128] [--workers 1,2]

The full pipeline decodes, samples frames at data.fps, crops, resizes, normalises, tokenizes and batches
(`make_train_iterator` with `data.num_workers` = W). The bare loop decodes every frame of each record's video in W
processes and does nothing else. Both read the same synthetic shards (clips of T + T/4 frames at H x W; the pipeline
decodes only up to the last frame it samples) in the same run, each for about --seconds after a warm-up (worker
start-up, and enough batches to drain what the prefetch buffers filled meanwhile). The ratio is the pipeline's
throughput as a fraction of decoding alone (goal: >= 0.9).
"""

import concurrent.futures
import itertools
import multiprocessing
import pathlib
import tempfile
import time

from absl import app, flags
import grain

from lumiere_jax import config as config_lib
from lumiere_jax.data import pipeline, records, synthetic, video

_SHAPES = flags.DEFINE_list('shapes', ['16x64x64', '80x128x128'], 'Clip shapes, frames x height x width.')
_WORKERS = flags.DEFINE_list('workers', ['1', '2'], 'Worker process counts (data.num_workers; bare decode processes).')
_SECONDS = flags.DEFINE_float('seconds', 3.0, 'Timed seconds per measurement, after the warm-up.')
_CLIPS = flags.DEFINE_integer('clips', 32, 'Records in the synthetic set of each shape (read in a loop).')
_BATCH = flags.DEFINE_integer('batch', 4, 'Pipeline batch size.')
_WARMUP_BATCHES = flags.DEFINE_integer('warmup_batches', 8, 'Untimed pipeline batches before the timed ones.')


def _decode_all(data: bytes) -> int:
  return len(video.decode_video(records.decode_record(data)['video'])[0])


def bare_clips_per_s(paths: list[str], workers: int, seconds: float) -> float:
  """Clips/s decoding every frame of each record in `workers` spawned processes, over the records in a loop."""
  source = grain.sources.ArrayRecordDataSource(paths)
  items = [source[i] for i in range(len(source))]
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
    list(pool.map(_decode_all, items[:workers]))  # start the workers
    clips, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
      clips += len(list(pool.map(_decode_all, items)))
  return clips / elapsed


def pipeline_clips_per_s(config, seconds: float, warmup_batches: int) -> float:
  """Clips/s of `make_train_iterator(config)` after `warmup_batches` untimed batches."""
  iterator = pipeline.make_train_iterator(config)
  for _ in range(warmup_batches):
    next(iterator)
  batches, start = 0, time.perf_counter()
  while (elapsed := time.perf_counter() - start) < seconds:
    next(iterator)
    batches += 1
  iterator.close()
  return batches * config.train.batch_size / elapsed


def main(argv):
  del argv
  print('| clip (T x H x W) | workers | pipeline clips/s | bare decode clips/s | ratio |')
  print('|---|---|---|---|---|')
  with tempfile.TemporaryDirectory() as directory:
    for shape, workers in itertools.product(_SHAPES.value, map(int, _WORKERS.value)):
      frames, height, width = map(int, shape.split('x'))
      if height != width:
        raise ValueError(f'--shapes {shape}: the synthetic set has square frames')
      config = config_lib.load('stage=base,size=tiny')
      config.unlock()
      paths = synthetic.ensure_synthetic_dataset(directory, num_clips=_CLIPS.value, image_size=height,
                                                 num_frames=frames, fps=config.data.fps)
      config.model.image_size, config.model.num_frames = height, frames
      config.train.batch_size = _BATCH.value
      config.data.update(dict(source=str(pathlib.Path(paths[0]).parent / '*.array_record'), num_workers=workers))
      piped = pipeline_clips_per_s(config, _SECONDS.value, _WARMUP_BATCHES.value)
      bare = bare_clips_per_s(paths, workers, _SECONDS.value)
      print(f'| {shape} | {workers} | {piped:.1f} | {bare:.1f} | {piped / bare:.2f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
