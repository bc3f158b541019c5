"""`lumiere-train --config configs/lumiere.py:stage=base,size=tiny --workdir DIR`."""

from absl import app, flags, logging
from ml_collections import config_flags

from lumiere_jax.parallel import distributed
from lumiere_jax.train.main import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'configs/lumiere.py:stage=<t2i|base|ssr|conditional>,size=<tiny|small|paper>[,sr=1]',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, samples. Resumes if present.')


def main(argv):
  del argv
  distributed.initialize_from_flags()
  logging.set_verbosity(logging.WARNING)
  result = train(_CONFIG.value, _WORKDIR.value)
  if result.preempted:
    raise SystemExit(0)


def run():
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)


if __name__ == '__main__':
  run()
