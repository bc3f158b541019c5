"""One orbax CheckpointManager per workdir: train state, data iterator position and config, saved together.

Layout: `<workdir>/checkpoints/<step>/{state,data,config}`. Saves are asynchronous and committed atomically (a step
directory only becomes visible to `latest_step` once complete); the newest `train.keep_checkpoints` are kept.
Restores target abstract arrays carrying the *current* mesh's shardings, so a run resumes onto another mesh.
"""

import json
import pathlib

import grain
import jax
import orbax.checkpoint as ocp

from lumiere_jax import config as config_lib


def checkpoint_dir(workdir: str | pathlib.Path) -> pathlib.Path:
  return pathlib.Path(workdir).resolve() / 'checkpoints'


class Checkpointer:
  """Saves and restores the {state, data, config} composite of one workdir."""

  def __init__(self, workdir: str | pathlib.Path, *, keep: int = 3, async_save: bool = True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator, config, *, force: bool = False) -> bool:
    args = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(json.loads(config.to_json())))
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

  def restore(self, step: int, abstract_state, data_iterator=None):
    """The state at `step` (onto the shardings in `abstract_state`); also repositions `data_iterator`."""
    args = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iterator is not None:
      self._check_data_layout(step)
      args['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self.manager.restore(step, args=ocp.args.Composite(**args)).state

  def _check_data_layout(self, step: int) -> None:
    """Refuses a data position saved by another number of processes (each process saved its own slice's state)."""
    saved = (self.manager.directory / str(step) / 'data').glob('process_*-of-*.json')
    counts = sorted({int(path.stem.rsplit('-of-', 1)[1]) for path in saved})
    if counts and counts != [jax.process_count()]:
      raise ValueError(
          f'checkpoint step {step}: the data iterator position was saved by {" and ".join(map(str, counts))} '
          f'processes, this job has {jax.process_count()}. Each process reads its own slice of the data, so the '
          'exact next batch does not exist under another process count; resume with the same number of processes.')

  def restore_config(self, step: int):
    saved = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    return config_lib.from_json(json.dumps(saved))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


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
  """(config, step, flat params) of a saved run, params = frozen + EMA (or raw) trainable, on `mesh`."""
  from lumiere_jax.train import state as state_lib  # train.state imports models; keep this module light
  workdir, step = resolve(path)
  checkpointer = Checkpointer(workdir, async_save=False)
  config = checkpointer.restore_config(step)
  setup = state_lib.TrainSetup.create(config, mesh)
  state = checkpointer.restore(step, setup.abstract_state())
  checkpointer.close()
  return config, step, state_lib.inference_params(state, use_ema)
