"""`--help` of every command-line tool prints its own flags grouped by purpose and an example, and exits 0 (absl's
own --help listed no flag of ours and exited 1). The tools run in this process, as in test_cli_errors.py."""

import re
import sys

from absl import flags
import pytest

from test_cli_errors import _tool

TOOLS = ['train', 'sample', 'eval', 'export', 'aot', 'data']


def _help(tool, monkeypatch, capsys, *args) -> str:
  monkeypatch.setattr(sys, 'argv', [f'lumiere-{tool.__name__.rpartition(".")[2]}', *args])
  with pytest.raises(SystemExit) as exit_:
    tool.run()
  assert exit_.value.code == 0
  return capsys.readouterr().out


def _own_flags(tool) -> set[str]:
  return {name for name in flags.FLAGS if flags.FLAGS.find_module_defining_flag(name) == tool.__name__}


def _listed(text: str) -> set[str]:
  return set(re.findall(r'^  --([\w-]+)', text, re.MULTILINE))


@pytest.mark.parametrize('name', TOOLS)
def test_help_lists_every_own_flag_in_groups_with_an_example(name, monkeypatch, capsys):
  with _tool(name) as tool:
    text = _help(tool, monkeypatch, capsys, '--help')
    own = _own_flags(tool) | ({'mode', 'image', 'mask', 'strength', 'style-from', 'alpha'} if name == 'sample' else
                              set())
  assert text.startswith(f'lumiere-{name}: ')
  assert re.search(rf'^  lumiere-{name} \S', text.partition('Example')[2], re.MULTILINE), text
  listed = _listed(text)
  assert own and own <= listed, own - listed
  assert {'debug', 'compile_cache'} <= listed
  groups = re.findall(r'^(\S[^\n]*):\n  --', text, re.MULTILINE)
  assert len(groups) >= 2 and groups[-1] == 'Every tool', groups


def test_data_help_lists_its_commands_and_each_commands_flags(monkeypatch, capsys):
  with _tool('data') as tool:
    everything = _help(tool, monkeypatch, capsys, '-h')
    prepare = _help(tool, monkeypatch, capsys, 'prepare', '--help')
  commands = re.search(r'^Commands:\n((?:  .*\n)+)', everything, re.MULTILINE).group(1)
  assert re.findall(r'^  (\S+)', commands, re.MULTILINE) == list(tool.COMMANDS)
  assert {'videos', 'clip_seconds', 'keep_tail', 'shards', 'classes'} <= _listed(everything)
  assert {'videos', 'clip_seconds', 'keep_tail'} <= _listed(prepare)
  assert not {'shards', 'classes'} & _listed(prepare)


def test_help_after_double_dash_is_not_help():
  from lumiere_jax.cli import usage  # pylint: disable=import-outside-toplevel
  assert usage.asks_for_help(['lumiere-sample', '--prompt', 'x', '-h'])
  assert not usage.asks_for_help(['lumiere-sample', '--', '--help'])
  assert not usage.asks_for_help(['lumiere-sample', '--prompt', '--helpfull'])
