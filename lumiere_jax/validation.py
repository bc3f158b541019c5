"""`validate(config)`: every rule of a training config, run before anything is built or compiled.

Each rule lives beside what it validates (the stage table, the model, the text encoders, the data pipeline, the
diffusion and sampling settings, the training loop, its logging, the mesh, the in-training FVD); this module gathers
them and reports every problem at once, each prefixed with its field (`config.model.num_frames: ...`).
"""

import itertools

import jax

from lumiere_jax import config as config_lib
from lumiere_jax import data, models, stages, train
from lumiere_jax.diffusion import checks as diffusion_checks
from lumiere_jax.eval import checks as eval_checks
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.train import metrics as train_metrics


def validate(config, num_devices: int | None = None, num_processes: int | None = None, *,
             training: bool = True) -> None:
  """Raises ConfigError listing every invalid field; `num_devices` / `num_processes` default to this job's.

  `training=False` (sampling, export, evaluation, ahead-of-time compiles) skips what only a training run reads:
  `model.init_from`, and a T5 checkpoint where `text.architecture` names its shapes.
  """
  num_devices = jax.device_count() if num_devices is None else num_devices
  num_processes = jax.process_count() if num_processes is None else num_processes
  try:
    stages.of(config)
  except ValueError as e:
    raise config_lib.ConfigError(f'invalid config:\n  config.stage: {e}') from None
  error = config_lib.ConfigError.from_errors('invalid config', itertools.chain(
      models.config_errors(config, training=training), stages.config_errors(config), data.config_errors(config),
      diffusion_checks.config_errors(config), train.config_errors(config), train_metrics.config_errors(config),
      eval_checks.training_fvd_errors(config),
      mesh_lib.config_errors(config, num_devices, num_processes),
      stages.init_errors(config) if training else ()))
  if error:
    raise error
