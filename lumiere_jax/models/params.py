"""Parameters as flat `{'unet.down.0.res.0.conv.kernel': array}` dicts, and the model they plug into.

Training, checkpoints and exports hold parameters as flat dicts of plain arrays keyed by dotted paths: no NNX
metadata objects reach orbax, subsets (trainable / frozen) are picked by path, and an export is readable without
this package. `ModelSpec` keeps the NNX graph definition, the abstract shapes and the logical axis names, and turns
a flat dict back into a callable module inside `jax.jit`.
"""

import dataclasses
import re
from collections.abc import Callable, Mapping

import jax
from flax import nnx

Flat = dict[str, jax.Array]

# Parameter-selection presets for `config.train.trainable`: regular expressions matched against dotted paths.
TRAINABLE_PRESETS = {
    'all': r'.*',
    # The denoiser without the text encoder, which stays frozen at its initialisation (as the paper's T5 does).
    'unet': r'unet\..*',
    # The STUNet's new layers: every path with an element starting with `temporal` (models' naming rule).
    'temporal': r'(^|.*\.)temporal[^.]*(\..*|$)',
    # The conditional stage: the temporal layers plus the input convolution widened for the masked video and mask.
    'conditional': r'(^|.*\.)temporal[^.]*(\..*|$)|unet\.conv_in\..*',
}


def _path_key(path) -> str:
  return '.'.join(str(p) for p in path)


def _unflatten(flat: Mapping[str, jax.Array]) -> dict:
  """Dotted paths -> nested dict; digit elements become int keys (NNX list indices)."""
  nested = {}
  for key, value in flat.items():
    *parents, leaf = (int(p) if p.isdigit() else p for p in key.split('.'))
    node = nested
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return nested


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What is needed to run a model from flat parameters: graph, shapes and logical axis names."""
  graphdef: nnx.GraphDef
  shapes: dict[str, jax.ShapeDtypeStruct]
  logical_names: dict[str, tuple[str | None, ...]]

  @classmethod
  def from_builder(cls, build: Callable[[], nnx.Module]) -> 'ModelSpec':
    """Traces `build` abstractly (no parameter memory) and records each parameter's shape and logical names."""
    graphdef, params, *rest = nnx.split(nnx.eval_shape(build), nnx.Param, ...)
    if any(len(nnx.to_flat_state(r)) for r in rest):
      raise ValueError('models must hold only nnx.Param state (pass dropout rngs at call time)')
    shapes, names = {}, {}
    for path, variable in nnx.to_flat_state(params):
      key = _path_key(path)
      shapes[key] = variable.get_value()
      meta = variable.get_metadata()
      logical = meta.get('out_sharding') or meta.get('sharding_names') or meta.get('sharding')
      if logical is None or len(logical) != len(shapes[key].shape):
        raise ValueError(f'parameter {key} has no logical axis names matching its shape {shapes[key].shape}')
      names[key] = tuple(logical)
    return cls(graphdef, shapes, names)

  def merge(self, flat: Mapping[str, jax.Array]) -> nnx.Module:
    """A module computing with the given parameters (works on tracers, inside jit and grad)."""
    missing = self.shapes.keys() - flat.keys()
    if missing:
      raise KeyError(f'parameters missing: {sorted(missing)[:5]}')
    return nnx.merge(self.graphdef, _unflatten(flat))


def flat_params(module: nnx.Module) -> Flat:
  """A concrete module's parameters as a flat dict of arrays."""
  return {_path_key(path): v.get_value() for path, v in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def select(keys, trainable: str) -> tuple[list[str], list[str]]:
  """Splits parameter paths into (trainable, frozen) by a preset name of TRAINABLE_PRESETS or a regex."""
  pattern = re.compile(TRAINABLE_PRESETS.get(trainable, trainable))
  chosen = sorted(k for k in keys if pattern.fullmatch(k))
  return chosen, sorted(set(keys) - set(chosen))
