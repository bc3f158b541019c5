"""Loads a diffusers DeepFloyd IF U-Net folder into `IFUNet`'s flat parameter dict.

The folder is a pipeline folder (with `unet/`) or the unet folder itself: `config.json` plus the weights as
`diffusion_pytorch_model.safetensors`, a sharded `diffusion_pytorch_model.safetensors.index.json`, or their `fp16`
variants (widened to float32). Only JSON and safetensors are read: a folder holding only pickle files (`.bin`,
`.ckpt`, `.pt`) is refused, never unpickled. Every tensor maps by name to the same dotted path as
`params.flat_params` (`...conv1.weight` -> `...conv1.kernel`, norms' `weight` -> `scale`), conv kernels OIHW ->
HWIO and linear weights (out, in) -> (in, out); missing, unexpected and mis-shaped tensors are refused by name.
"""

import functools
import json
import pathlib

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open

from lumiere_jax.models import params
from lumiere_jax.models.deepfloyd_if import IFUNet
from lumiere_jax.models.deepfloyd_if_config import IFUNetConfig

WEIGHTS = 'diffusion_pytorch_model'
# Tried in this order: full precision first.
_CANDIDATES = (f'{WEIGHTS}.safetensors', f'{WEIGHTS}.safetensors.index.json', f'{WEIGHTS}.fp16.safetensors',
               f'{WEIGHTS}.safetensors.index.fp16.json')
_PICKLES = ('*.bin', '*.ckpt', '*.pt', '*.pth', '*.pkl')


def unet_folder(folder) -> pathlib.Path:
  """The folder holding the U-Net's config.json: `folder/unet` of a pipeline, else `folder` itself."""
  folder = pathlib.Path(folder)
  for candidate in (folder / 'unet', folder):
    if (candidate / 'config.json').is_file():
      return candidate
  raise FileNotFoundError(f'{folder}: no unet/config.json or config.json (expected a diffusers pipeline or unet '
                          'folder)')


def _weight_files(folder: pathlib.Path) -> list[pathlib.Path]:
  """The safetensors files to read, from the single file or the shard index (names checked to stay inside)."""
  for name in _CANDIDATES:
    path = folder / name
    if not path.is_file():
      continue
    if not name.endswith('.json'):
      return [path]
    weight_map = json.loads(path.read_text()).get('weight_map')
    if not isinstance(weight_map, dict) or not weight_map:
      raise ValueError(f'{path}: no "weight_map" in the shard index')
    shards = sorted(set(weight_map.values()))
    for shard in shards:
      if pathlib.PurePath(shard).name != shard or not shard.endswith('.safetensors'):
        raise ValueError(f'{path}: shard {shard!r} is not a safetensors file name inside the folder')
      if not (folder / shard).is_file():
        raise FileNotFoundError(f'{path}: shard {shard} is missing')
    return [folder / shard for shard in shards]
  pickles = sorted(p.name for pattern in _PICKLES for p in folder.glob(pattern))
  if pickles:
    raise ValueError(f'{folder} holds only pickle weights {pickles}; they are never unpickled here. Convert them to '
                     'safetensors (e.g. diffusers save_pretrained(..., safe_serialization=True)).')
  raise FileNotFoundError(f'{folder}: none of {list(_CANDIDATES)}')


def _read_tensors(files: list[pathlib.Path]) -> dict[str, np.ndarray]:
  tensors = {}
  for path in files:
    with safe_open(str(path), framework='np') as f:
      for name in f.keys():
        if name in tensors:
          raise ValueError(f'tensor {name} appears in more than one shard ({path.name})')
        tensors[name] = f.get_tensor(name)
  return tensors


def our_path(name: str, ndim: int) -> str:
  """diffusers tensor name -> our dotted parameter path."""
  if name.endswith('.weight'):
    return name[:-len('weight')] + ('kernel' if ndim >= 2 else 'scale')
  return name


def to_channels_last(array: np.ndarray) -> np.ndarray:
  """Conv OIHW -> HWIO, linear (out, in) -> (in, out), float32."""
  array = np.asarray(array, np.float32)
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  return array.T if array.ndim == 2 else array


@functools.lru_cache(maxsize=8)
def expected_shapes(cfg: IFUNetConfig) -> dict[str, tuple[int, ...]]:
  """Our 2-D IFUNet's parameter shapes by path, traced abstractly (no parameter memory); cached per config, as
  tracing a model's init takes seconds. Treat the result as read-only."""
  spec = params.ModelSpec.from_builder(lambda: IFUNet(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0)))
  return {path: tuple(s.shape) for path, s in spec.shapes.items()}


def load_unet(folder) -> tuple[IFUNetConfig, dict[str, np.ndarray]]:
  """(config, flat float32 parameters of the 2-D IFUNet) from a diffusers IF pipeline or unet folder."""
  folder = unet_folder(folder)
  cfg = IFUNetConfig.from_diffusers(json.loads((folder / 'config.json').read_text()))
  expected = expected_shapes(cfg)
  flat, problems, present = {}, [], set()
  for name, tensor in sorted(_read_tensors(_weight_files(folder)).items()):
    path = our_path(name, tensor.ndim)
    present.add(path)
    # positional_embedding is a bare parameter, not a linear weight: no transpose.
    value = np.asarray(tensor, np.float32) if path.endswith('positional_embedding') else to_channels_last(tensor)
    if path not in expected:
      problems.append(f'unexpected tensor {name}')
    elif value.shape != expected[path]:
      problems.append(f'tensor {name} has shape {tuple(tensor.shape)}, which does not give the {expected[path]} '
                      f'(channels-last) that config.json needs for {path}')
    else:
      flat[path] = value
  problems += [f'missing tensor {_diffusers_name(path)}' for path in sorted(set(expected) - present)]
  if problems:
    raise ValueError(f'{folder}: the weights do not match config.json:\n  ' + '\n  '.join(problems))
  return cfg, flat


def _diffusers_name(path: str) -> str:
  """Our dotted path -> the diffusers tensor name it loads from."""
  for ours in ('.kernel', '.scale'):
    if path.endswith(ours):
      return path[:-len(ours)] + '.weight'
  return path
