"""The package's imports point one way (WORKSPACE.md, "Layers"): a module imports only modules of its own layer or
of layers below it, so the config and the stage table load without models, and models without data or training."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'lumiere_jax'
# Top-level modules and packages of lumiere_jax, by layer (lowest first).
LAYERS = (
    {'__init__', 'config', 'stages', 'backbones', 'progress'},
    {'models', 'diffusion'},
    {'data'},
    {'parallel'},
    {'train', 'sample', 'eval', 'conditional', 'editing', 'export', 'inference', 'validation', 'ingest', 'convert'},
    {'cli', 'demo'},
)
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}


def _top(module_path: pathlib.Path) -> str:
  parts = module_path.relative_to(PACKAGE).with_suffix('').parts
  return parts[0]


def _imported_tops(source: str):
  """The lumiere_jax top-level names a module's source imports (any nesting, lazy imports included)."""
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = ([f'{node.module}.{alias.name}' for alias in node.names] if node.module == 'lumiere_jax'
               else [node.module])
    else:
      continue
    for name in names:
      parts = name.split('.')
      if parts[0] == 'lumiere_jax' and len(parts) > 1:
        yield parts[1]


MODULES = sorted(PACKAGE.rglob('*.py'))


def test_every_module_has_a_layer():
  assert {_top(path) for path in MODULES} <= LAYER.keys()


@pytest.mark.parametrize('path', MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_point_down(path):
  own = LAYER[_top(path)]
  upward = sorted({top for top in _imported_tops(path.read_text()) if LAYER[top] > own})
  assert not upward, f'{path.relative_to(PACKAGE)} (layer {own}) imports {upward} from higher layers'


def test_checker_sees_an_upward_import():
  assert list(_imported_tops('from lumiere_jax.train import checkpoint\nimport lumiere_jax.cli.sample')) == [
      'train', 'cli']
