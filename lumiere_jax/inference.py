"""One loader for everything that samples: a training run (its latest step, or `checkpoints/<step>`) or an export
(`lumiere-export`, a directory with manifest.json) -> config, model spec, mesh and parameters.

Used by `lumiere-sample` (base, SSR and the stylization run), `lumiere-eval` and `model.init_from`. The config gets
the caller's overrides once, on top of the sampling layout (parameters replicated, the batch split over every device:
`mesh.data=-1`) and with the in-training FVD off, and is validated like any config. No optimizer is built and no
optimizer state is read.

A model trained on pre-embedded captions holds no pretrained text encoder (`models.holds_text_encoder`), nor do its
checkpoints and exports; their config still names it (`text.encoder`, `text.checkpoint`), and `load` adds its weights
from there so that prompts can be encoded (`--config.text.checkpoint` points elsewhere if the folder moved).
"""

import dataclasses
import pathlib

import jax

from lumiere_jax import config as config_lib
from lumiere_jax import export as export_lib
from lumiere_jax import convert, models, validation
from lumiere_jax.models import params as params_lib, text_encoders
from lumiere_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import checkpoint

# What sampling changes in a run's config before applying the caller's overrides.
SAMPLING_LAYOUT = {'mesh.data': -1, 'mesh.fsdp': 1, 'mesh.tensor': 1, 'mesh.context': 1, 'eval.fvd_every_steps': 0}


@dataclasses.dataclass(frozen=True)
class InferenceModel:
  config: object
  step: int
  spec: params_lib.ModelSpec
  mesh: jax.sharding.Mesh
  params: dict  # flat, placed on `mesh`


def is_export(path) -> bool:
  return (pathlib.Path(path) / 'manifest.json').is_file()


def load_config(path):
  """The config of a run (its latest step, or the step directory named) or of an export."""
  if is_export(path):
    return export_lib.load_config(path)
  workdir, step = checkpoint.resolve(path)
  return checkpoint.Checkpointer(workdir, async_save=False).restore_config(step)


def load_params(path, mesh: jax.sharding.Mesh, *, use_ema: bool = True) -> tuple[object, int, dict]:
  """(config, step, flat params on `mesh`) of a run (frozen + EMA, or raw with `use_ema=False`) or an export; for
  `model.init_from`, also a DeepFloyd IF diffusers folder: (None, 0, its U-Net's NumPy weights), which the caller
  places (`TrainSetup.init`)."""
  if convert.is_diffusers_folder(path):
    return None, 0, convert.unet_params(path)
  if is_export(path):
    config, params = export_lib.load_export(path, mesh)
    return config, export_lib.read_manifest(path)['step'], params
  return checkpoint.load_inference_params(path, mesh, use_ema=use_ema)


def load(path, *, overrides: dict | None = None, use_ema: bool = True, devices=None) -> InferenceModel:
  """The model at `path` on a batch-split mesh of `devices` (default: all), its config with `overrides` (dotted
  paths; None values are skipped) applied and validated. `use_ema=False` takes a run's raw trainable parameters."""
  if not use_ema and is_export(path):
    raise ValueError(f'{path}: an export holds the weights chosen when it was written; raw weights need a run')
  devices = jax.devices() if devices is None else list(devices)
  config = config_lib.with_overrides(load_config(path), {**SAMPLING_LAYOUT, **(overrides or {})})
  pre_embedded = not models.holds_text_encoder(config)
  if pre_embedded:  # sampling encodes prompts: the model gets its encoder back, from text.checkpoint
    problems = [f'config.{field}: {problem}' for field, problem in text_encoders.config_errors(config)]
    if problems:
      raise ValueError(f'{path} was trained on pre-embedded captions and holds no text encoder; sampling encodes '
                       f'prompts with the {config.text.encoder} of text.checkpoint (--config.text.checkpoint=DIR '
                       f'if it moved): {"; ".join(problems)}')
    config = config_lib.with_overrides(config, {'data.text_embeddings': False})
  validation.validate(config, num_devices=1, num_processes=1, training=False)  # no training batch or mesh here
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  _, step, params = load_params(path, mesh, use_ema=use_ema)
  spec = models.model_spec(config)
  if pre_embedded:
    params.update(sharding_lib.place_params(models.pretrained_text_params(config.text), spec, mesh,
                                            config.mesh.axis_rules))
  return InferenceModel(config, step, spec, mesh, params)
