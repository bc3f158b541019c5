"""lumiere-convert: pretrained weights from another framework as a lumiere_jax export.

  lumiere-convert deepfloyd --unet IF_DIR --out EXPORT_DIR [--config configs/lumiere.py:stage=t2i,backbone=if_i_xl]
      [--text_encoder DIR] [--tokenizer spiece.model] [--dtype float32|bfloat16|float16] [--format orbax|safetensors]

`deepfloyd`: a DeepFloyd IF diffusers folder (a pipeline with unet/, text_encoder/, tokenizer/, or a unet folder) that
you downloaded and whose licence you accepted; nothing is downloaded. The U-Net's architecture is read from its
config.json. The export samples IF's T2I (`lumiere-sample --checkpoint EXPORT_DIR`) and starts the base / ssr stages
(`--config.model.init_from=EXPORT_DIR`; the diffusers folder itself works there too).

Example:

  lumiere-convert deepfloyd --unet ~/IF-I-XL-v1.0 --out exports/if-i-xl
  lumiere-train --config configs/lumiere.py:stage=base,size=paper,backbone=if_i_xl --workdir runs/if_base \\
      --config.model.init_from=exports/if-i-xl --config.text.checkpoint=$HOME/IF-I-XL-v1.0/text_encoder
"""

import json

from absl import app, flags
from ml_collections import config_flags

from lumiere_jax import convert
from lumiere_jax import export as export_lib
from lumiere_jax.cli import errors

SOURCES = ('deepfloyd',)
_UNET = flags.DEFINE_string('unet', None, 'deepfloyd: the diffusers IF pipeline folder (or its unet/ folder).')
_OUT = flags.DEFINE_string('out', None, 'New export directory (params, config.json, manifest.json).')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'The config the weights become (default: stage=t2i,'
                                          'size=paper with the IF preset of the folder\'s stage).', lock_config=False)
_TEXT_ENCODER = flags.DEFINE_string('text_encoder', '', "IF's T5 folder (default: <unet>/text_encoder when present).")
_TOKENIZER = flags.DEFINE_string('tokenizer', '', 'SentencePiece model (default: <unet>/tokenizer/spiece.model).')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', list(export_lib.DTYPES), 'Stored parameter dtype.')
_FORMAT = flags.DEFINE_enum('format', 'orbax', list(export_lib.FORMATS), 'File format of the parameters.')
GROUPS = [('Input and output', (_UNET, _OUT, _CONFIG)), ('Text encoder', (_TEXT_ENCODER, _TOKENIZER)),
          ('Stored how', (_DTYPE, _FORMAT))]


def main(argv):
  if len(argv) != 2 or argv[1] not in SOURCES:
    raise app.UsageError(f'lumiere-convert <source> [flags]; sources: {", ".join(SOURCES)}')
  if not _UNET.value or not _OUT.value:
    raise app.UsageError('deepfloyd needs --unet and --out')
  manifest = convert.convert(_UNET.value, _OUT.value, _CONFIG.value, text_encoder=_TEXT_ENCODER.value,
                             tokenizer=_TOKENIZER.value, dtype=_DTYPE.value, fmt=_FORMAT.value)
  print(f'wrote {_OUT.value}: {json.dumps(manifest)}')


def run():
  errors.run(main, 'lumiere-convert', GROUPS)


if __name__ == '__main__':
  run()
