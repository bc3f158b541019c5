r"""lumiere-train: train one stage of the cascade; rerunning the same command resumes from the workdir.

  lumiere-train --config configs/lumiere.py:stage=<t2i|base|ssr|conditional>,size=<tiny|small|paper>[,sr=1] \
      --workdir DIR [--config.<section>.<field>=<value> ...] [--dry_run]

Example (a tiny t2v base model on the synthetic moving-shapes set, minutes on a CPU):

  lumiere-train --config configs/lumiere.py:stage=base,size=tiny --workdir workdirs/base \
      --config.model.init_from=workdirs/t2i

`--dry_run` checks the config and every path it names (model.init_from, data.source, text.checkpoint) in seconds and
prints what would be trained, without reading data or compiling.
"""

import contextlib
import pathlib

from absl import flags, logging
import jax
from ml_collections import config_flags

from lumiere_jax import models, validation
from lumiere_jax.cli import errors, usage
from lumiere_jax.data import sources
from lumiere_jax.parallel import distributed
from lumiere_jax.train import checkpoint
from lumiere_jax.train.main import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'configs/lumiere.py:stage=<t2i|base|ssr|conditional>,size=<tiny|small|paper>[,sr=1]',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, samples. Resumes if present.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Check the config and every path it names, print a summary (stage, '
                             'parameters, data, steps) and exit without reading data or compiling.')
GROUPS = [('Run', (_CONFIG, _WORKDIR)), ('Quick checks', (_DRY_RUN,)), usage.DISTRIBUTED]


def _data_summary(config) -> str:
  """What `data.source` names; a glob or TFDS source is opened (not read), so a missing one fails here."""
  data = config.data
  if data.source == 'synthetic':
    where = data.synthetic_dir or f'$LUMIERE_DATA_DIR or {sources.DEFAULT_DATA_DIR}'
    return f'synthetic moving shapes, {data.synthetic_clips} clips (built on first use under {where})'
  source, _ = sources.make_source(config)
  return f'{data.source}: {len(source):,} records'


def _workdir_summary(workdir: pathlib.Path) -> str:
  if checkpoint.checkpoint_dir(workdir).is_dir():
    with contextlib.suppress(FileNotFoundError):  # a checkpoints/ folder without a committed step: a new run
      return f'{workdir}: resumes from step {checkpoint.resolve(workdir)[1]}'
  parent = next(p for p in (workdir, *workdir.parents) if p.exists())
  if not parent.is_dir():
    raise NotADirectoryError(f'--workdir {workdir}: {parent} is a file')
  return f'{workdir}: a new run'


def dry_run(config, workdir: str | pathlib.Path) -> str:
  """The summary of what `lumiere-train` would do, after every check that needs no data read and no compile
  (`validation.validate`, the data source, the workdir); raises the error a real run would give first."""
  validation.validate(config, num_devices=jax.device_count(), num_processes=jax.process_count())
  spec = models.model_spec(config)
  sizes = {path: shape.size for path, shape in spec.shapes.items()}
  trainable, _ = models.split_trainable(config, list(sizes))
  t = config.train
  lines = [
      f'stage {config.stage}: {sum(sizes.values()):,} parameters, {sum(sizes[p] for p in trainable):,} trainable '
      f'(train.trainable={t.trainable!r})',
      f'model: {config.model.num_frames} frames of {config.model.image_size}x{config.model.image_size}, '
      f'init_from={config.model.init_from or "-"}, text encoder {config.text.encoder}'
      + (f' from {config.text.checkpoint}' if config.text.checkpoint else ''),
      f'data: {_data_summary(config)}',
      f'training: {t.steps:,} steps of batch {t.batch_size} on {jax.device_count()} device(s)',
      f'workdir: {_workdir_summary(pathlib.Path(workdir))}',
  ]
  return '\n'.join(['dry run: config and paths OK', *(f'  {line}' for line in lines)])


def main(argv):
  del argv
  distributed.initialize_from_flags()
  logging.set_verbosity(logging.WARNING)
  if _DRY_RUN.value:
    print(dry_run(_CONFIG.value, _WORKDIR.value), flush=True)
    return
  result = train(_CONFIG.value, _WORKDIR.value)
  if result.preempted:
    raise SystemExit(0)


def run():
  flags.mark_flags_as_required(['config', 'workdir'])
  errors.run(main, 'lumiere-train', GROUPS)


if __name__ == '__main__':
  run()
