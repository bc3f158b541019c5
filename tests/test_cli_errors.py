"""Every command-line tool turns an expected error (bad config, data, path or value) into one message on stderr and exit
status 1, without a traceback unless --debug. The tools run in this process (no JAX import per test): each is
imported afresh with the other tools' absl flags set aside, since they share names such as --config and --out."""

import contextlib
import importlib
import pathlib
import sys

from absl import flags
import jax
import pytest

from lumiere_jax import config as config_lib
from lumiere_jax.cli import errors
from lumiere_jax.data import pipeline
from lumiere_jax.train import main as train_main

FLAGS = flags.FLAGS
CLI = 'lumiere_jax.cli'
CONFIGS = pathlib.Path(__file__).resolve().parent.parent / 'configs'
TRAIN_CONFIG = f'{CONFIGS}/lumiere.py:stage=base,size=tiny'


def _tool_flags() -> dict:
  """{flag name: (flag, defining module)} of the flags the command-line modules define (errors.py's are shared)."""
  found = {}
  for name in list(FLAGS):
    module = FLAGS.find_module_defining_flag(name)
    if module and module.startswith(f'{CLI}.') and module != errors.__name__:
      found[name] = (FLAGS[name], module)
  return found


def _tool_modules() -> dict:
  return {name: module for name, module in sys.modules.items() if name.startswith(f'{CLI}.') and
          name != errors.__name__}


@contextlib.contextmanager
def _tool(name: str):
  """`lumiere_jax.cli.<name>` imported afresh; the flags and modules of the tools loaded before are restored after."""
  saved_flags, saved_modules = _tool_flags(), _tool_modules()
  package = sys.modules[CLI]
  saved_attributes = {attribute: getattr(package, attribute) for attribute in vars(package)
                      if f'{CLI}.{attribute}' in saved_modules}
  for flag_name in saved_flags:
    delattr(FLAGS, flag_name)
  for module in saved_modules:
    del sys.modules[module]
  for attribute in saved_attributes:  # else `from lumiere_jax.cli import x` finds the old module on the package
    delattr(package, attribute)
  try:
    yield importlib.import_module(f'{CLI}.{name}')
  finally:
    for flag_name in _tool_flags():
      delattr(FLAGS, flag_name)
    for module in _tool_modules():
      del sys.modules[module]
      if hasattr(package, module.rpartition('.')[2]):
        delattr(package, module.rpartition('.')[2])
    sys.modules.update(saved_modules)
    for attribute, value in saved_attributes.items():
      setattr(package, attribute, value)
    for flag_name, (flag, module) in saved_flags.items():
      FLAGS[flag_name] = flag
      FLAGS.register_flag_by_module(module, flag)
    FLAGS.unparse_flags()
    FLAGS.mark_as_parsed()  # grain reads absl flags; outside app.run they must be marked parsed


def _run(tool, monkeypatch, capsys, *args) -> tuple[int, str]:
  """(exit status, stderr) of `tool.run()` with these command-line arguments."""
  monkeypatch.setattr(sys, 'argv', [tool.__name__, *map(str, args)])
  with pytest.raises(SystemExit) as exit_:
    tool.run()
  return exit_.value.code, capsys.readouterr().err


def _raising(error: Exception):
  """A stand-in for a function, raising `error`."""
  def fail(*args, **kwargs):
    raise error
  return fail


def _assert_one_message(status, stderr, command, expected):
  lines = [line for line in stderr.splitlines() if line.startswith(f'{command}: ')]
  assert status == errors.EXIT_STATUS and len(lines) == 1, stderr
  assert expected in lines[0] and lines[0].endswith('(--debug shows the traceback)'), stderr
  assert 'Traceback' not in stderr


@pytest.mark.parametrize('error', [
    config_lib.ConfigError('invalid config: config.train.batch_size: 3 must be divisible by 8 devices'),
    pipeline.BadDataError('12 of 40 records read were bad (30% > data.max_bad_fraction 10%)'),
    train_main.NonfiniteError('non-finite loss or gradient 3 steps in a row (train.max_nonfinite_in_a_row 3)'),
], ids=lambda error: type(error).__name__)
def test_train_reports_its_errors_in_one_line(error, monkeypatch, capsys, tmp_path):
  with _tool('train') as tool:
    monkeypatch.setattr(tool, 'train', _raising(error))
    status, stderr = _run(tool, monkeypatch, capsys, '--config', TRAIN_CONFIG, '--workdir', tmp_path)
    _assert_one_message(status, stderr, 'lumiere-train', f'{type(error).__name__}: {error}')

    monkeypatch.setattr(sys, 'argv', [tool.__name__, '--config', TRAIN_CONFIG, '--workdir', str(tmp_path), '--debug'])
    with pytest.raises(type(error)):  # --debug: the error itself, with its traceback
      tool.run()


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
  with _tool('train') as tool:
    monkeypatch.setattr(tool, 'train', _raising(KeyError('a bug')))
    monkeypatch.setattr(sys, 'argv', [tool.__name__, '--config', TRAIN_CONFIG, '--workdir', str(tmp_path)])
    with pytest.raises(KeyError):
      tool.run()


@pytest.mark.parametrize('case, expected', [
    ('out is a file', 'PrepareError: --out {tmp}/file is a file, not a folder'),
    ('out under a file', 'PrepareError: --out {tmp}/file/out: cannot write there (Not a directory'),
    ('clip_seconds nan', 'PrepareError: --clip_seconds must be a finite number, got nan'),
    ('no captions file', 'PrepareError: --captions {tmp}/none.csv: no such file or folder'),
])
def test_data_prepare_refuses_in_one_line(case, expected, monkeypatch, capsys, tmp_path):
  (tmp_path / 'file').write_text('')
  (tmp_path / 'videos').mkdir()
  (tmp_path / 'captions.csv').write_text('path,caption\n')
  args = dict(videos=tmp_path / 'videos', captions=tmp_path / 'captions.csv', out=tmp_path / 'out')
  args |= {'out is a file': dict(out=tmp_path / 'file'), 'out under a file': dict(out=tmp_path / 'file' / 'out'),
           'clip_seconds nan': dict(clip_seconds='nan'), 'no captions file': dict(captions=tmp_path / 'none.csv')}[case]
  with _tool('data') as tool:
    status, stderr = _run(tool, monkeypatch, capsys, 'prepare', *(f'--{name}={value}' for name, value in args.items()))
  _assert_one_message(status, stderr, 'lumiere-data', expected.format(tmp=tmp_path))


@pytest.mark.parametrize('name, args', [
    ('sample', ['--workdir', '{missing}', '--prompt', 'a red circle']),
    ('export', ['--workdir', '{missing}', '--out', '{tmp}/export']),
    ('eval', ['--config', f'{CONFIGS}/eval_ucf101.py:n=8', '--workdir', '{missing}', '--ucf101', '{tmp}',
              '--out', '{tmp}/report.json']),
])
def test_a_missing_run_is_one_line(name, args, monkeypatch, capsys, tmp_path):
  missing = tmp_path / 'no_such_run'
  with _tool(name) as tool:
    status, stderr = _run(tool, monkeypatch, capsys, *(arg.format(missing=missing, tmp=tmp_path) for arg in args))
  _assert_one_message(status, stderr, f'lumiere-{name}', str(missing))


def test_aot_names_an_unknown_topology_in_one_line(monkeypatch, capsys):
  monkeypatch.setenv('ALLOW_MULTIPLE_LIBTPU_LOAD', 'true')
  platforms = jax.config.jax_platforms
  try:
    with _tool('aot') as tool:
      status, stderr = _run(tool, monkeypatch, capsys, '--config', TRAIN_CONFIG, '--topology', 'v9z-8')
  finally:
    jax.config.update('jax_platforms', platforms)
  _assert_one_message(status, stderr, 'lumiere-aot', 'v9z-8')
