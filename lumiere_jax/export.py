"""Parameter exports: a run's inference weights with its config and a manifest, usable without any train state.

An export directory (CLI: cli/export.py, `lumiere-export`) holds
  params.safetensors or params/ (orbax)  flat dotted names -> arrays: frozen + EMA (or raw) trainable parameters
  config.json                            the run's config (`config.from_json` rebuilds it)
  manifest.json                          stage, step, weights, parameter count, dtype, format, sha256
The sha256 covers every array in name order (name, dtype, shape, bytes); `load_export` refuses an export whose
arrays no longer match it. It is written under `<out>.partial` and renamed when complete (a failure removes it).
`params.safetensors` also carries the stage, step, weights, dtype, the sha256 and a sha256 of config.json in its
header metadata, so a bare safetensors reader sees what it holds; float32 and float16 load with plain NumPy, bfloat16
through `ml_dtypes`.
"""

import hashlib
import json
import os
import pathlib
import shutil

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import safetensors
import safetensors.numpy

from lumiere_jax import config as config_lib
from lumiere_jax import models
from lumiere_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import checkpoint

FORMATS = ('orbax', 'safetensors')
# float16 halves the size too and any safetensors / NumPy reader takes it; bfloat16 keeps float32's range (NumPy
# reads it through ml_dtypes). Both widen back to float32 exactly on load.
DTYPES = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16, 'float16': np.float16}
_SAFETENSORS_FILE = 'params.safetensors'
_ORBAX_DIR = 'params'


def content_hash(arrays: dict[str, np.ndarray]) -> str:
  """sha256 over the arrays in name order: each name, dtype and shape, then its bytes (C order)."""
  digest = hashlib.sha256()
  for name in sorted(arrays):
    array = np.ascontiguousarray(arrays[name])
    digest.update(json.dumps([name, array.dtype.name, list(array.shape)]).encode())
    digest.update(array.reshape(-1).view(np.uint8))
  return digest.hexdigest()


def export(workdir, out, *, use_ema: bool = True, dtype: str = 'float32', fmt: str = 'orbax') -> dict:
  """Writes the parameters of `workdir`'s latest step (or a `checkpoints/<step>` dir) to `out`; returns the manifest.

  The run's checkpoint is restored onto one CPU device, so any topology (or none) can export it.
  """
  _check_options(out, dtype, fmt)
  mesh = mesh_lib.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices('cpu')[:1])
  source, step = checkpoint.resolve(workdir)
  config, step, params = checkpoint.load_inference_params(checkpoint.checkpoint_dir(source) / str(step), mesh,
                                                          use_ema=use_ema)
  return write(out, config, params, step=step, weights='ema' if use_ema else 'raw', source=str(source), dtype=dtype,
               fmt=fmt)


def _check_options(out, dtype: str, fmt: str) -> None:
  if fmt not in FORMATS:
    raise ValueError(f'format {fmt!r}: must be one of {FORMATS}')
  if dtype not in DTYPES:
    raise ValueError(f'dtype {dtype!r}: must be one of {tuple(DTYPES)}')
  out = pathlib.Path(out)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise FileExistsError(f'{out} exists and is not empty (or not a directory); export into a new directory')


def write(out, config, params: dict, *, step: int, weights: str, source: str, dtype: str = 'float32',
          fmt: str = 'orbax') -> dict:
  """Writes flat `params` of `config`'s model as an export at `out` (relative paths are fine); returns the manifest.

  Everything is written under `<out>.partial` and renamed when complete; a failure removes the partial directory.
  """
  _check_options(out, dtype, fmt)
  out = pathlib.Path(out).resolve()  # orbax wants absolute paths
  arrays = {name: np.asarray(jax.device_get(value)).astype(DTYPES[dtype]) for name, value in params.items()}
  manifest = dict(stage=config.stage, step=step, weights=weights, parameters=sum(a.size for a in arrays.values()),
                  tensors=len(arrays), dtype=dtype, format=fmt, sha256=content_hash(arrays), source=source)
  config_json = config.to_json(indent=2)
  partial = out.with_name(out.name + '.partial')
  shutil.rmtree(partial, ignore_errors=True)
  partial.mkdir(parents=True)
  try:
    _write_arrays(partial, arrays, fmt, metadata=dict(
        stage=config.stage, step=str(step), weights=weights, dtype=dtype, sha256=manifest['sha256'],
        config_sha256=hashlib.sha256(config_json.encode()).hexdigest()))
    (partial / 'config.json').write_text(config_json)
    (partial / 'manifest.json').write_text(json.dumps(manifest, indent=2))
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  if out.exists():
    out.rmdir()
  partial.rename(out)
  return manifest


def _write_arrays(directory: pathlib.Path, arrays: dict, fmt: str, metadata: dict[str, str]) -> None:
  if fmt == 'orbax':
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(directory / _ORBAX_DIR, arrays)
    return
  path = directory / _SAFETENSORS_FILE
  try:
    safetensors.numpy.save_file(arrays, path, metadata=metadata)
  except Exception as e:
    if any(a.dtype == ml_dtypes.bfloat16 for a in arrays.values()):
      raise ValueError(f'safetensors {safetensors.__version__} cannot write bfloat16 NumPy arrays; export bfloat16 '
                       'with format orbax, or float16 with safetensors') from e
    raise
  umask = os.umask(0)
  os.umask(umask)
  path.chmod(0o666 & ~umask)  # safetensors creates the file private (0600); give it the usual mode


def read_manifest(out) -> dict:
  path = pathlib.Path(out) / 'manifest.json'
  if not path.is_file():
    raise FileNotFoundError(f'{out}: no manifest.json; not an export directory (lumiere-export writes one)')
  return json.loads(path.read_text())


def load_config(out):
  """The config of the run an export came from."""
  return config_lib.from_json((pathlib.Path(out) / 'config.json').read_text())


def load_export(out, mesh: jax.sharding.Mesh) -> tuple[object, dict]:
  """(config, flat params) of an export, placed on `mesh` with the model's shardings.

  Refuses an export whose arrays differ from its manifest's sha256. bfloat16 exports are widened back to the
  model's float32 parameters (exactly: every bfloat16 is a float32).
  """
  out = pathlib.Path(out).absolute()  # orbax takes absolute paths only
  manifest = read_manifest(out)
  config = load_config(out)
  if manifest['format'] == 'orbax':
    with ocp.StandardCheckpointer() as checkpointer:
      arrays = checkpointer.restore(out / _ORBAX_DIR)
  else:
    arrays = safetensors.numpy.load_file(out / _SAFETENSORS_FILE)
  digest = content_hash(arrays)
  if digest != manifest['sha256']:
    raise ValueError(f'{out}: the parameters do not match manifest.json (sha256 {digest}, manifest '
                     f'{manifest["sha256"]}); the export was changed or damaged, export it again')
  spec = models.model_spec(config)
  shapes = spec.shapes
  if arrays.keys() != shapes.keys():
    missing, unexpected = sorted(shapes.keys() - arrays.keys()), sorted(arrays.keys() - shapes.keys())
    raise ValueError(f'{out}: the parameter names do not match the model its config builds: missing {missing[:3]}, '
                     f'unexpected {unexpected[:3]}')
  wrong = [name for name in shapes if arrays[name].shape != shapes[name].shape]
  if wrong:
    raise ValueError(f'{out}: parameter shapes differ from the model its config builds, e.g. {wrong[:3]}')
  return config, sharding_lib.place_params(arrays, spec, mesh, config.mesh.axis_rules)
