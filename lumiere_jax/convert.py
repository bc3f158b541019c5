"""DeepFloyd IF weights on disk -> our world: an export (`lumiere-convert deepfloyd`) or `model.init_from` directly.

The input is a diffusers IF pipeline folder (with `unet/`, `text_encoder/`, `tokenizer/`) or a unet folder, which the
user downloaded and whose licence they accepted; nothing is downloaded here and only JSON and safetensors are read
(`models/diffusers_weights.py`). The U-Net's architecture comes from its config.json (`model.deepfloyd`), so any IF
variant converts, not only the presets. The text encoder is IF's T5-v1.1-XXL (`text_encoder/`, tokenizer
`tokenizer/spiece.model`); a config with the built-in encoder (the tiny presets) keeps its seeded random weights:
for tests and dry runs of the path, not for sampling real IF.
"""

import json
import pathlib

import ml_collections
from flax import nnx

from lumiere_jax import backbones
from lumiere_jax import config as config_lib
from lumiere_jax import export as export_lib
from lumiere_jax import models
from lumiere_jax.models import diffusers_weights, params as params_lib
from lumiere_jax.models.deepfloyd_if_config import IFUNetConfig

UNET_PREFIX = 'unet.'


def is_diffusers_folder(path) -> bool:
  """Whether `path` is a diffusers pipeline or unet folder (a U-Net config.json; no export manifest)."""
  path = pathlib.Path(path)
  if (path / 'manifest.json').is_file():
    return False
  try:
    folder = diffusers_weights.unet_folder(path)
  except FileNotFoundError:
    return False
  return json.loads((folder / 'config.json').read_text()).get('_class_name') == 'UNet2DConditionModel'


def unet_params(folder) -> dict:
  """The folder's U-Net weights as flat parameters of our model (`unet.…`, channels-last float32)."""
  _, flat = diffusers_weights.load_unet(folder)
  return {UNET_PREFIX + path: value for path, value in flat.items()}


def deepfloyd_config(folder, base: ml_collections.ConfigDict | None = None, *, text_encoder: str = '',
                     tokenizer: str = '') -> ml_collections.ConfigDict:
  """`base` (default: `stage=t2i,size=paper` with the IF stage I or II preset the folder's U-Net is) with the folder's
  U-Net as `model.deepfloyd`, its image size, and its T5 as the text encoder.

  `text_encoder` / `tokenizer` default to the pipeline's `text_encoder/` and `tokenizer/spiece.model` when present.
  """
  folder = pathlib.Path(folder)
  raw = json.loads((diffusers_weights.unet_folder(folder) / 'config.json').read_text())
  unet = IFUNetConfig.from_diffusers(raw)  # refuses what we do not build, naming the key
  super_resolution = unet.class_embed_type == 'timestep'
  if base is None:
    base = config_lib.load(f'stage=t2i,size=paper,sr={int(super_resolution)},'
                           f'backbone={"if_ii_l" if super_resolution else "if_i_xl"}')
  if base.model.backbone != 'deepfloyd_if' or bool(base.sr.factor) != super_resolution:
    raise ValueError(f'{folder} holds an IF stage {"II" if super_resolution else "I"} U-Net: the config must use an '
                     f'IF backbone preset with {"sr=1" if super_resolution else "sr=0"}')
  config = base.copy_and_resolve_references()
  config.unlock()
  config.model.deepfloyd = ml_collections.ConfigDict(
      {key: tuple(value) if isinstance(value, list) else value
       for key, value in {**backbones.IF_UNET_DEFAULTS, **raw}.items() if key in backbones.IF_UNET_DEFAULTS})
  config.model.image_size = int(raw.get('sample_size') or config.model.image_size)
  config.model.temporal_downsample = (not super_resolution,) * (unet.num_levels - 1)
  text_encoder = text_encoder or _existing(folder / 'text_encoder')
  tokenizer = tokenizer or _existing(folder / 'tokenizer' / 'spiece.model')
  if text_encoder:
    config.text.update(encoder='t5', checkpoint=str(pathlib.Path(text_encoder).resolve()),
                       tokenizer=str(pathlib.Path(tokenizer).resolve()) if tokenizer else '')
  elif config.text.encoder == 't5':
    raise ValueError(f'{folder}: no text_encoder/ (IF\'s T5-v1.1-XXL) in the folder; give its path, or a config with '
                     'the built-in encoder (tests only)')
  config.lock()
  return config


def _existing(path: pathlib.Path) -> str:
  return str(path) if path.exists() else ''


def convert(folder, out, base: ml_collections.ConfigDict | None = None, *, text_encoder: str = '',
            tokenizer: str = '', dtype: str = 'float32', fmt: str = 'orbax') -> dict:
  """Writes the folder's IF model as an export at `out` (`export.write`); returns the manifest.

  The export holds the U-Net and the text encoder (T5 from its checkpoint; the built-in one at its seeded init), so
  `lumiere-sample --checkpoint out` samples IF's T2I and `--config.model.init_from=out` inflates it.
  """
  config = deepfloyd_config(folder, base, text_encoder=text_encoder, tokenizer=tokenizer)
  params = unet_params(folder)
  text = models.pretrained_text_params(config.text)
  if not text:  # the built-in encoder's seeded initial weights, built alone (not the whole model)
    encoder = models.build_text_encoder(config.text, dtype=config.model.dtype, remat='none',
                                        rngs=nnx.Rngs(config.seed))
    text = {models.TEXT_PREFIX + path: value for path, value in params_lib.flat_params(encoder).items()}
  return export_lib.write(out, config, {**params, **text}, step=0, weights='converted',
                          source=str(pathlib.Path(folder).resolve()), dtype=dtype, fmt=fmt)
