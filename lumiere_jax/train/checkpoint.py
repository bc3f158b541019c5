"""One orbax CheckpointManager per workdir: train state, data iterator position and config, saved together.

Layout: `<workdir>/checkpoints/<step>/{state,data,config,checksum}`. Saves are asynchronous and committed atomically
(a step directory only becomes visible to `latest_step` once complete); the newest `train.keep_checkpoints` are kept.
Restores target abstract arrays carrying the *current* mesh's shardings, so a run resumes onto another mesh.

Corruption: orbax (tensorstore, zstd chunks) raises on a truncated, zeroed, overwritten or deleted array file and on
damaged or missing `state/_METADATA`, but flipped bits inside a chunk restore silently as other values. `checksum`
(per-array sums of the raw bytes, taken on device at save) closes that gap: a restore whose arrays differ from it
fails. Not covered: the data iterator's JSON (a malformed one fails; an edited but valid one loads) and steps saved
before checksums existed. `restore_latest` falls back to older steps past any step that fails to restore.
"""

import json
import pathlib
import time

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from lumiere_jax import config as config_lib


def checkpoint_dir(workdir: str | pathlib.Path) -> pathlib.Path:
  return pathlib.Path(workdir).resolve() / 'checkpoints'


def unreadable_dir(workdir: str | pathlib.Path) -> pathlib.Path:
  """Where `restore_latest` moves steps it could not restore (out of orbax's sight, kept for inspection)."""
  return pathlib.Path(workdir).resolve() / 'unreadable_checkpoints'


class DataLayoutError(ValueError):
  """The data position was saved by another process count: no step can fix that, so no fallback happens."""


class RestoreError(RuntimeError):
  """No checkpoint step could be restored; the message lists each step and its error."""


def checksums(tree) -> dict[str, list[int]]:
  """Per array (by key path): two uint32 sums of its bytes, computed where the arrays live (nothing gathered)."""
  sums = jax.device_get(_checksums(tree))
  return {jax.tree_util.keystr(path): [int(v) for v in value]
          for path, value in jax.tree_util.tree_leaves_with_path(sums)}


def _array_checksum(x):
  """(sum, position-weighted sum) of the bytes, wrapping: a flipped bit changes the first, moved bytes the second."""
  x = x.astype(jnp.uint8) if x.dtype == jnp.bool_ else x
  data = jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)  # (..., itemsize) for wider dtypes
  index = sum((jax.lax.broadcasted_iota(jnp.uint32, data.shape, d) * jnp.uint32(stride)
               for d, stride in enumerate(_strides(data.shape))), jnp.uint32(0))
  weights = index * jnp.uint32(2654435761) + 1
  return jnp.stack([data.sum(dtype=jnp.uint32), (data * weights).sum(dtype=jnp.uint32)])


_checksums = jax.jit(lambda tree: jax.tree.map(_array_checksum, tree))


def _strides(shape) -> list[int]:
  strides, size = [], 1
  for dim in reversed(shape):
    strides.append(size % 2 ** 32)
    size *= dim
  return strides[::-1]


class Checkpointer:
  """Saves and restores the {state, data, config, checksum} composite of one workdir."""

  def __init__(self, workdir: str | pathlib.Path, *, keep: int = 3, async_save: bool = True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options)
    self.workdir = pathlib.Path(workdir).resolve()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator, config, *, force: bool = False) -> bool:
    args = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(json.loads(config.to_json())),
                checksum=ocp.args.JsonSave(checksums(state)))
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

  def restore(self, step: int, abstract_state, data_iterator=None, reposition_data=None):
    """The state at `step` (onto the shardings in `abstract_state`); also repositions `data_iterator`.

    A data position saved by another number of processes raises `DataLayoutError`, unless `reposition_data` (saved
    iterator states of every old process -> this process's state) translates it. Orbax restores the items one by one
    (`data` before `state`), so on any failure the iterator is put back where it was: a failed restore never leaves
    it half-way to another step.
    """
    args = dict(state=ocp.args.StandardRestore(abstract_state), **self._checksum_args(step))
    other_layout = data_iterator is not None and self._saved_data_states(step, reposition_data is not None)
    if data_iterator is not None:
      if not other_layout:
        args['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
      position = data_iterator.get_state()
    try:
      restored = self._restore_verified(step, args)
      if other_layout:
        data_iterator.set_state(reposition_data(other_layout))
    except Exception:
      if data_iterator is not None:
        data_iterator.set_state(position)
      raise
    return restored.state

  def restore_parts(self, step: int, abstract_parts: dict) -> dict:
    """Only the top-level entries of the state at `step` named in `abstract_parts` (e.g. {'frozen', 'ema'}),
    onto its shardings, checked against their checksums. Nothing else of the step is read."""
    target = ocp.args.PyTreeRestore(item=abstract_parts, partial_restore=True,
                                    restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_parts))
    return self._restore_verified(step, dict(state=target, **self._checksum_args(step))).state

  def _checksum_args(self, step: int) -> dict:
    """The checksum item to restore with the state; none for a step saved before checksums existed."""
    return {'checksum': ocp.args.JsonRestore()} if (self.manager.directory / str(step) / 'checksum').is_dir() else {}

  def _restore_verified(self, step: int, args: dict):
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    if 'checksum' in restored:
      _verify(step, restored.state, restored.checksum)
    return restored

  def restore_latest(self, abstract_state, data_iterator=None, reposition_data=None) -> tuple[int, dict] | None:
    """(step, state) of the newest step that restores (None without any step), newest first.

    Each step that fails is logged with its error and, once an older one restored, moved to `unreadable_dir` (not
    deleted): orbax would otherwise skip every save up to that step number and refuse one at it. Raises
    `RestoreError` listing every step's error when none restores.
    """
    failures = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state = self.restore(step, abstract_state, data_iterator, reposition_data)
      except DataLayoutError:
        raise
      except Exception as e:  # orbax and tensorstore raise many kinds; each means this step is unreadable
        failures.append((step, f'{type(e).__name__}: {e}'))
        logging.warning('checkpoint step %d in %s could not be restored (%s); trying an older step', step,
                        self.manager.directory, failures[-1][1])
        continue
      if failures:
        self._set_aside([failed for failed, _ in failures])
      return step, state
    if failures:
      raise RestoreError(f'no checkpoint in {self.manager.directory} could be restored:\n' +
                         '\n'.join(f'  step {step}: {error}' for step, error in failures))
    return None

  def _set_aside(self, steps) -> None:
    """Moves unreadable steps to `unreadable_dir` (process 0; the others wait) and refreshes orbax's step list."""
    if jax.process_index() == 0:
      target = unreadable_dir(self.workdir)
      target.mkdir(exist_ok=True)
      for step in steps:
        destination = target / f'{step}-{time.strftime("%Y%m%d-%H%M%S")}'
        (self.manager.directory / str(step)).rename(destination)
        logging.warning('moved unreadable checkpoint step %d to %s', step, destination)
    multihost_utils.sync_global_devices('lumiere_jax:set_aside_unreadable_checkpoints')
    self.manager.reload()

  def _saved_data_states(self, step: int, other_layout_allowed: bool) -> list[dict]:
    """[] when `step`'s data position was saved by this job's number of processes; else every old process's
    iterator state, in process order, if `other_layout_allowed`. Raises `DataLayoutError` otherwise."""
    saved = sorted((self.manager.directory / str(step) / 'data').glob('process_*-of-*.json'),
                   key=lambda path: int(path.stem.split('_')[1].split('-')[0]))
    counts = sorted({int(path.stem.rsplit('-of-', 1)[1]) for path in saved})
    if not counts or counts == [jax.process_count()]:
      return []
    if other_layout_allowed and len(counts) == 1 and len(saved) == counts[0]:
      logging.warning('checkpoint step %d: data position saved by %d processes, this job has %d: resuming at the same '
                      'point of the epoch, in this layout\'s order', step, counts[0], jax.process_count())
      return [json.loads(path.read_text()) for path in saved]
    raise DataLayoutError(
        f'checkpoint step {step}: the data iterator position was saved by {" and ".join(map(str, counts))} '
        f'processes, this job has {jax.process_count()}. Each process reads its own slice of the data, so the exact '
        'next batch does not exist under another process count: resume with the same number of processes, or set '
        '--config.data.resume_on_other_process_count=True to go on from the same point of the epoch.')

  def restore_config(self, step: int):
    saved = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    return config_lib.from_json(json.dumps(saved))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _verify(step: int, state, saved: dict) -> None:
  differ = [name for name, sums in checksums(state).items() if saved.get(name) != sums]
  if differ:
    raise ValueError(f'checkpoint step {step}: {len(differ)} arrays differ from the checksums saved with them '
                     f'(corrupted files), e.g. {differ[:3]}')


def resolve(path: str | pathlib.Path) -> tuple[pathlib.Path, int]:
  """A workdir (-> its latest step) or a step directory `<workdir>/checkpoints/<step>` -> (workdir, step)."""
  path = pathlib.Path(path).resolve()
  if path.parent.name == 'checkpoints' and path.name.isdigit():
    return path.parent.parent, int(path.name)
  if not checkpoint_dir(path).is_dir():
    raise FileNotFoundError(f'{path}: neither a workdir with checkpoints/ nor a checkpoints/<step> directory')
  step = ocp.CheckpointManager(checkpoint_dir(path)).latest_step()
  if step is None:
    raise FileNotFoundError(f'{path}: no committed checkpoint in {checkpoint_dir(path)}')
  return path, step


def load_inference_params(path, mesh: jax.sharding.Mesh, *, use_ema: bool = True):
  """(config, step, flat params) of a saved run, params = frozen + EMA (or raw) trainable, on `mesh`.

  Only those parts of the state are read (and checked against their checksums): the optimizer moments, twice the
  trainable parameters, never reach memory.
  """
  from lumiere_jax.train import state as state_lib  # train.state imports models; keep this module light
  workdir, step = resolve(path)
  checkpointer = Checkpointer(workdir, async_save=False)
  config = checkpointer.restore_config(step)
  abstract = state_lib.TrainSetup.create(config, mesh).abstract_state()
  trainable = 'ema' if use_ema else 'params'
  parts = checkpointer.restore_parts(step, {part: abstract[part] for part in ('frozen', trainable)})
  checkpointer.close()
  return config, step, {**parts['frozen'], **parts[trainable]}
