"""lumiere-export: a trained run's parameters (no optimizer state) as a directory any sampler can load.

  lumiere-export --workdir RUN --out DIR [--ema | --raw] [--dtype float32|bfloat16] [--format orbax|safetensors]

Example:

  lumiere-export --workdir workdirs/base --out exports/base --format safetensors
  lumiere-sample --checkpoint exports/base --prompt "a red circle moving right" --out clip.mp4
"""

import json

from absl import app, flags

from lumiere_jax import export as export_lib
from lumiere_jax.cli import errors

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (latest checkpoint) or a checkpoints/<step> dir.')
_OUT = flags.DEFINE_string('out', None, 'New export directory (params, config.json, manifest.json).')
_EMA = flags.DEFINE_bool('ema', None, 'Export the EMA of the trainable parameters (the default).')
_RAW = flags.DEFINE_bool('raw', False, 'Export the raw trainable parameters instead of their EMA.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', list(export_lib.DTYPES), 'Stored parameter dtype.')
_FORMAT = flags.DEFINE_enum('format', 'orbax', list(export_lib.FORMATS), 'File format of the parameters.')
GROUPS = [('Input and output', (_WORKDIR, _OUT)), ('Which weights, stored how', (_EMA, _RAW, _DTYPE, _FORMAT))]


def main(argv):
  del argv
  if _EMA.value and _RAW.value:
    raise app.UsageError('give at most one of --ema and --raw')
  manifest = export_lib.export(_WORKDIR.value, _OUT.value, use_ema=not _RAW.value, dtype=_DTYPE.value,
                               fmt=_FORMAT.value)
  print(f'wrote {_OUT.value}: {json.dumps(manifest)}')


def run():
  flags.mark_flags_as_required(['workdir', 'out'])
  errors.run(main, 'lumiere-export', GROUPS)


if __name__ == '__main__':
  run()
