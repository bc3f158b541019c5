"""One orbax CheckpointManager per workdir: train state, data iterator position and config, saved together.

Layout: `<workdir>/checkpoints/<step>/{state,data,config,checksum}`. Saves are asynchronous and committed atomically
(a step directory only becomes visible to `latest_step` once complete); the newest `train.keep_checkpoints` are kept.
Restores target abstract arrays carrying the *current* mesh's shardings, so a run resumes onto another mesh.

Corruption: orbax (tensorstore, zstd chunks) raises on a truncated, zeroed, overwritten or deleted array file and on
damaged or missing `state/_METADATA`, but flipped bits inside a chunk restore silently as other values. `checksum`
(per-array sums of the raw bytes, taken on device at save) closes that gap: a restore whose arrays differ from it
fails. Not covered: the data iterator's JSON (a malformed one fails; an edited but valid one loads) and steps saved
before checksums existed. `restore_latest` falls back to older steps past any step that fails to restore, saying in
one line per step which file failed and why.

Failed saves (disk full, a read-only or vanished filesystem): `check_saves`, called at every step boundary, notices an
asynchronous save that failed as soon as it has finished, removes its partial directory and raises one
`CheckpointSaveError`; the steps saved before it stay.
"""

import contextlib
import json
import logging as std_logging
import pathlib
import re
import shutil
import time

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from lumiere_jax import config as config_lib
from lumiere_jax import models
from lumiere_jax.parallel import sharding as sharding_lib


def checkpoint_dir(workdir: str | pathlib.Path) -> pathlib.Path:
  return pathlib.Path(workdir).resolve() / 'checkpoints'


def unreadable_dir(workdir: str | pathlib.Path) -> pathlib.Path:
  """Where `restore_latest` moves steps it could not restore (out of orbax's sight, kept for inspection)."""
  return pathlib.Path(workdir).resolve() / 'unreadable_checkpoints'


class DataLayoutError(ValueError):
  """The data position was saved by another process count: no step can fix that, so no fallback happens."""


class RestoreError(RuntimeError):
  """No checkpoint step could be restored; the message lists each step and its error."""


class CheckpointSaveError(RuntimeError):
  """A checkpoint step could not be written; its partial directory is gone and the older steps are intact."""


class WorkdirError(RuntimeError):
  """The workdir cannot hold checkpoints (not a directory, read-only, ...)."""


class _QuietOrbaxSaveErrors(std_logging.Filter):
  """Drops orbax's own tracebacks of a failed asynchronous save (three per failure, from three threads): the
  `CheckpointSaveError` raised by `Checkpointer.check_saves` states the step, the directory and the cause once."""

  PATTERN = re.compile(r'background save thread|Save Finalize thread|Checkpointer failed|raised an exception')

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not (record.levelno >= std_logging.ERROR and 'orbax' in record.pathname
                and self.PATTERN.search(str(record.msg)))


_QUIET_ORBAX = _QuietOrbaxSaveErrors()
std_logging.getLogger('absl').addFilter(_QUIET_ORBAX)


def _first_line(error: BaseException) -> str:
  """The type and first line of the message, without the TensorStore spec dump some orbax errors carry."""
  lines = str(error).strip().splitlines()
  text = lines[0].split(' See full TensorStore details')[0] if lines else ''
  return f'{type(error).__name__}: {text}'[:300]


def _causes(error: BaseException) -> str:
  """The error and the errors it was raised from, first lines only, joined with '<-'."""
  parts, seen = [], set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    parts.append(_first_line(error))
    error = error.__cause__ or error.__context__
  return ' <- '.join(dict.fromkeys(parts))


def restore_failure(step_dir: pathlib.Path, error: BaseException) -> str:
  """One line naming the file (or array) of `step_dir` that failed to restore and why.

  Orbax reports a missing `state/_METADATA` as a pytree structure mismatch and tensorstore prints its whole spec
  (dozens of lines): name the missing file, or the array from the spec, instead.
  """
  for name in ('state/_METADATA', 'config/metadata'):
    if not (step_dir / name).exists():
      return f'{step_dir / name} is missing'
  arrays = re.findall(r"'path': '([^'/][^']*?)/?'", str(error))  # relative paths: the arrays'
  where = f'{step_dir / "state"} (array {arrays[-1]})' if arrays else step_dir
  return f'{where}: {_causes(error)}'


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
    try:
      self.manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options)
    except OSError as e:
      raise WorkdirError(f'workdir {workdir}: cannot create {checkpoint_dir(workdir)} ({e.strerror or e}); the '
                         'workdir must be a writable directory') from e
    self.workdir = pathlib.Path(workdir).resolve()
    self._saving = None  # the step of the asynchronous save not yet checked
    self._failed = False

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator, config, *, force: bool = False) -> bool:
    args = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(json.loads(config.to_json())),
                checksum=ocp.args.JsonSave(checksums(state)))
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    self.check_saves(wait=True)
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(**args), force=force)
    except Exception as e:  # the synchronous part: creating the directory, writing metadata
      self._raise_failed_save(step, e)
    if saved:
      self._saving = step
    return saved

  def check_saves(self, *, wait: bool = False) -> None:
    """Raises `CheckpointSaveError` if the last asynchronous save failed; cheap while it is still being written
    (then it returns at once, unless `wait`). Called at every step boundary, so a failure stops the job one step
    after it happened."""
    if self._saving is None or (not wait and self.manager.is_saving_in_progress()):
      return
    step, self._saving = self._saving, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # whatever the filesystem raised in the background thread
      self._raise_failed_save(step, e)

  def _raise_failed_save(self, step: int, error: Exception):
    """Removes the partial directory of `step` (process 0) and raises one `CheckpointSaveError` naming the cause."""
    self._failed = True
    with contextlib.suppress(Exception):  # it raises the same failure once more
      self.manager.close()  # first: its threads may still write metadata into the partial directory
    # Orbax stops waiting at the first failed write of a save, while the others (tensorstore's) go on writing into
    # its directory: wait for them too, or the directory would come back after its removal.
    async_manager = getattr(getattr(self.manager, '_checkpointer', None), '_async_manager', None)
    for write in getattr(async_manager, '_commit_futures', None) or ():
      with contextlib.suppress(Exception):  # the failure raised below, or another of the same save
        write.result()
    directory = pathlib.Path(self.manager.directory)
    partial = list(directory.glob(f'{step}.orbax-checkpoint-tmp*'))
    if (directory / str(step)).is_dir() and not (directory / str(step) / '_CHECKPOINT_METADATA').exists():
      partial.append(directory / str(step))
    if jax.process_index() == 0:
      for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    good = sorted(int(path.name) for path in directory.iterdir() if path.name.isdigit())
    kept = f'the newest good checkpoint is step {good[-1]}' if good else 'no earlier checkpoint exists'
    raise CheckpointSaveError(f'checkpoint step {step} could not be saved in {directory}: {_causes(error)}. Its '
                              f'partial files were removed; {kept}. Free space or fix the filesystem, then rerun '
                              'to resume.') from error

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
        failures.append((step, restore_failure(self.manager.directory / str(step), e)))
        logging.warning('checkpoint step %d could not be restored: %s; trying an older step', step, failures[-1][1])
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
    """Until every save has committed; raises `CheckpointSaveError` if one failed."""
    self.check_saves(wait=True)

  def close(self) -> None:
    """Waits for the saves under way (see `wait`); after a failed save, whose error was raised, just lets go."""
    if not self._failed:
      self.wait()
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
  trainable parameters, never reach memory, and no optimizer is built.
  """
  workdir, step = resolve(path)
  checkpointer = Checkpointer(workdir, async_save=False)
  config = checkpointer.restore_config(step)
  spec = models.model_spec(config)
  shardings = sharding_lib.param_shardings(spec, mesh, config.mesh.axis_rules)
  abstract = lambda keys: {k: jax.ShapeDtypeStruct(spec.shapes[k].shape, spec.shapes[k].dtype,  # noqa: E731
                                                   sharding=shardings[k]) for k in keys}
  trainable, frozen = models.split_trainable(config, spec.shapes)
  part = 'ema' if use_ema else 'params'
  parts = checkpointer.restore_parts(step, {'frozen': abstract(frozen), part: abstract(trainable)})
  checkpointer.close()
  return config, step, {**parts['frozen'], **parts[part]}
