"""Config files and their arguments: loading, the `:arg` parser, overrides, and rebuilding a saved run's config.

`configs/lumiere.py` returns a locked ConfigDict, so unknown keys and wrong types already fail on override with the
field named. What types cannot check (ranges, divisibility, the mesh against the devices, how fields relate) is
checked by `lumiere_jax.validation.validate`, from rules that live beside what they validate. This module imports
nothing else of the package: anything that reads a checkpoint's config can use it.
"""

import importlib.util
import json
import pathlib

import ml_collections

CONFIG_FILE = pathlib.Path(__file__).resolve().parent.parent / 'configs' / 'lumiere.py'
EVAL_CONFIG_FILE = CONFIG_FILE.parent / 'eval_ucf101.py'


class ConfigError(ValueError):
  """One or more invalid config fields; the message lists each as `config.<field>: <problem>`."""

  @classmethod
  def from_errors(cls, title: str, errors) -> 'ConfigError | None':
    """The error listing `(field, problem)` pairs under `title`, or None when there are none."""
    errors = list(errors)
    if not errors:
      return None
    return cls(f'{title}:\n' + '\n'.join(f'  config.{field}: {problem}' for field, problem in errors))


def parse_arg(arg: str, defaults: dict[str, str], choices: dict[str, tuple[str, ...]]) -> dict[str, str]:
  """A config file's `key=value,...` argument over `defaults`; keys in `choices` take only the values listed there.

  Raises ValueError naming the unknown key or value and what is accepted.
  """
  expected = ', '.join(f'{key}=<{"|".join(choices[key]) if key in choices else "..."}>' for key in defaults)
  parsed = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in defaults:
      raise ValueError(f'config argument {item!r}: expected {expected}, comma-separated')
    parsed[key] = value
  for key, allowed in choices.items():
    if parsed[key] not in allowed:
      raise ValueError(f'config argument {key}={parsed[key]!r}: must be one of {allowed}')
  return parsed


def load(arg: str = '', path: str | pathlib.Path = CONFIG_FILE) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file, as `--config path:arg` would give it."""
  spec = importlib.util.spec_from_file_location('lumiere_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def with_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted-path overrides applied (`{'sample.steps': 10}`); None values leave a field."""
  config = config.copy_and_resolve_references()
  config.unlock()
  config.update_from_flattened_dict({key: value for key, value in overrides.items() if value is not None})
  config.lock()
  return config


# Config sections whose keys depend on the values (a backbone's architecture dict): restored whole, not on the schema.
FREE_FORM = (('model', 'deepfloyd'),)


def from_json(text: str) -> ml_collections.ConfigDict:
  """A config saved with a checkpoint, rebuilt on the file's schema (so saved runs keep their types)."""
  saved = json.loads(text)
  config = load(f'stage={saved["stage"]},size={saved["size"]}')
  config.unlock()
  for section, key in FREE_FORM:
    if key in saved.get(section, {}):
      config[section][key] = ml_collections.ConfigDict(
          {k: _tuplify(v) for k, v in saved[section].pop(key).items()})
  config.update_from_flattened_dict(_flatten(saved))
  config.lock()
  return config


def _flatten(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = tuple(map(_tuplify, value)) if isinstance(value, list) else value
  return out


def _tuplify(value):
  return tuple(map(_tuplify, value)) if isinstance(value, list) else value
