"""The UCF101 zero-shot plan (Lumiere Table 1): which videos to generate, and resumable per-chunk work over processes.

N videos (10,235 in the paper) follow UCF101's class frequencies: class counts by the largest-remainder rule (they
sum to N exactly, each within 1 of N x frequency), one prompt per class (`configs/ucf101_prompts.json`, ours), in an
order shuffled with the plan's seed so that every chunk and every Inception Score split mixes the classes.

Chunk c holds videos [c B, (c + 1) B) for B = `chunk_size` and is one `generate` call with seed `seed + c`; the last
chunk is padded to B with repeats of its own prompts (the extra videos are dropped), so every call has one shape and a
video's pixels depend on the plan alone, not on how many devices or processes made it (up to float round-off: 1 and 4
devices gave uint8 frames within 1). Process p of P does chunks p, p + P, ...; each chunk's result is one `.npz`
written under a temporary name and renamed (the rename is the done marker), so a rerun skips every finished chunk.
"""

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from lumiere_jax import progress


def allocate(frequencies: np.ndarray, total: int) -> np.ndarray:
  """Integer counts summing to `total` in proportion to `frequencies`: floors, then +1 to the largest remainders.

  Ties in the remainders go to the lower class index (a stable sort), so the result is deterministic.
  """
  frequencies = np.asarray(frequencies, np.float64)
  if frequencies.ndim != 1 or (frequencies < 0).any() or frequencies.sum() <= 0 or total < 0:
    raise ValueError(f'need non-negative frequencies with a positive sum and total >= 0, got {frequencies}, {total}')
  exact = frequencies / frequencies.sum() * total
  counts = np.floor(exact).astype(np.int64)
  remainders = exact - counts
  counts[np.argsort(-remainders, kind='stable')[:total - counts.sum()]] += 1
  return counts


def load_prompts(path: str | pathlib.Path, classes: Sequence[str]) -> list[str]:
  """The prompt of each class, in `classes` order, from a JSON object {class name: prompt}.

  Every class needs a prompt (a misspelt name shows up as a missing class); prompts of other classes are ignored,
  so one file serves UCF101 and any subset of it.
  """
  prompts = json.loads(pathlib.Path(path).read_text())
  missing = [name for name in classes if name not in prompts]
  if missing:
    raise ValueError(f'{path}: no prompt for the UCF101 classes {missing[:5]} ({len(missing)} missing)')
  empty = [name for name in classes if not str(prompts[name]).strip()]
  if empty:
    raise ValueError(f'{path}: empty prompts for {empty[:5]}')
  return [prompts[name] for name in classes]


@dataclasses.dataclass(frozen=True)
class Plan:
  labels: np.ndarray  # (N,) class index of each video, in generation order
  prompts: tuple[str, ...]  # per class
  chunk_size: int
  seed: int

  @property
  def num_chunks(self) -> int:
    return -(-len(self.labels) // self.chunk_size)

  def chunk_labels(self, chunk: int) -> np.ndarray:
    return self.labels[chunk * self.chunk_size:(chunk + 1) * self.chunk_size]

  def chunk_prompts(self, chunk: int) -> list[str]:
    """`chunk_size` prompts: the chunk's own, cycled to fill a short last chunk."""
    labels = self.chunk_labels(chunk)
    return [self.prompts[labels[i % len(labels)]] for i in range(self.chunk_size)]

  def chunk_seed(self, chunk: int) -> int:
    return self.seed + chunk

  def fingerprint(self) -> str:
    """sha256 of the labels, prompts, chunk size and seed: what decides every generated video."""
    text = json.dumps([self.labels.tolist(), list(self.prompts), self.chunk_size, self.seed])
    return hashlib.sha256(text.encode()).hexdigest()


def make_plan(frequencies: np.ndarray, prompts: Sequence[str], num_videos: int, chunk_size: int, seed: int) -> Plan:
  """`num_videos` class labels allocated by `frequencies`, in an order shuffled by `seed`."""
  if len(frequencies) != len(prompts):
    raise ValueError(f'{len(frequencies)} class frequencies but {len(prompts)} prompts')
  labels = np.repeat(np.arange(len(prompts)), allocate(frequencies, num_videos))
  labels = labels[np.random.default_rng(seed).permutation(num_videos)]
  return Plan(labels, tuple(prompts), chunk_size, seed)


def chunk_path(directory: pathlib.Path, name: str, chunk: int) -> pathlib.Path:
  return directory / f'{name}-{chunk:05d}.npz'


def run_chunks(directory: str | pathlib.Path, name: str, num_chunks: int, compute: Callable[[int], dict],
               *, process_index: int = 0, process_count: int = 1, what: str = '') -> int:
  """Writes `compute(c)` (a dict of arrays) to `<directory>/<name>-<c>.npz` for this process's chunks that lack one,
  with progress lines about `what` (default: the chunk name).

  Returns how many chunks it computed (the others were done by an earlier run).
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  mine = range(process_index, num_chunks, process_count)
  todo = [chunk for chunk in mine if not chunk_path(directory, name, chunk).is_file()]
  resumed = f' ({len(mine) - len(todo)} chunks done by an earlier run)' if len(todo) < len(mine) else ''
  for chunk in progress.track(todo, f'{what or name}{resumed}'):
    path = chunk_path(directory, name, chunk)
    partial = path.with_name(f'{path.stem}.partial.npz')
    np.savez(partial, **compute(chunk))
    partial.rename(path)
  return len(todo)


def read_chunks(directory: str | pathlib.Path, name: str, num_chunks: int, key: str) -> np.ndarray:
  """The `key` arrays of every chunk, concatenated in chunk order; FileNotFoundError naming a missing chunk."""
  parts = []
  for chunk in range(num_chunks):
    path = chunk_path(pathlib.Path(directory), name, chunk)
    if not path.is_file():
      raise FileNotFoundError(f'{path}: chunk {chunk} of {num_chunks} was not computed (did every process finish?)')
    with np.load(path, allow_pickle=False) as data:
      parts.append(data[key])
  return np.concatenate(parts)


def claim_directory(directory: str | pathlib.Path, record: dict) -> None:
  """Records what `directory`'s chunks are computed from (`plan.json`); refuses one that holds another record.

  Resuming into a directory made by another plan or model would mix their videos into one score.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / 'plan.json'
  if path.is_file():
    saved = json.loads(path.read_text())
    if saved != record:
      changed = sorted(key for key in record.keys() | saved.keys() if saved.get(key) != record.get(key))
      raise ValueError(f'{directory} holds chunks of another evaluation (differs in {changed}); use a new directory '
                       'or delete this one')
    return
  partial = path.with_name('plan.partial.json')
  partial.write_text(json.dumps(record, indent=2))
  partial.rename(path)
