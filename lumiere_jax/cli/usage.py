"""`--help` of the command-line tools: the command's docstring (usage and an example), then its own flags grouped by
purpose, then the flags every tool shares; exit status 0.

absl's own `--help` lists only the flags of the `__main__` module, and ours live in `lumiere_jax.cli.*` (the console
scripts' `__main__` is a generated stub), so it printed nothing useful and exited 1. `--helpfull` stays absl's.
"""

import sys
import textwrap

from absl import flags

HELP_ARGS = ('-h', '--help', '-help', '--helpshort', '-?')
WIDTH = 100
# Flags defined outside the tools' modules, shown under their purpose when the tool has them.
DISTRIBUTED = ('Multi-process jobs', ('distributed', 'coordinator_address', 'num_processes', 'process_id',
                                      'initialization_timeout_s', 'heartbeat_timeout_s', 'shutdown_timeout_s'))
Groups = list[tuple[str, tuple]]  # [(title, (flag name or FlagHolder, ...)), ...]


def asks_for_help(argv: list[str]) -> bool:
  """Whether the command line asks for --help (before any `--` that ends the flags)."""
  args = argv[1:argv.index('--')] if '--' in argv else argv[1:]
  return any(arg in HELP_ARGS for arg in args)


def _name(flag) -> str:
  return flag if isinstance(flag, str) else flag.name


def _default(flag) -> str | None:
  if flag.default is None or flag.default == '' or flag.default == []:
    return None
  if isinstance(flag.default, bool):
    return 'true' if flag.default else 'false'
  return str(flag.default)


def describe_flag(name: str) -> str:
  """`--name (default D)` and the wrapped help text (with its choices) of one defined flag."""
  flag = flags.FLAGS[name]
  default = _default(flag)
  head = f'  --{name}' + (f' (default {default})' if default is not None else '')
  # absl decorates the help of enum flags with '<a|b>: ' and of multi flags with '; repeat this option ...'.
  text = ' '.join(flag.help.split())
  enum_values = getattr(flag.parser, 'enum_values', None)
  if enum_values:
    text = text.removeprefix(f'<{"|".join(enum_values)}>: ') + f' One of: {", ".join(enum_values)}.'
  if isinstance(flag, flags.MultiFlag):
    text, head = text.partition('; repeat this option')[0], head + ' (repeatable)'
  if flag.name == 'config':
    text += ' Any field can then be overridden: --config.<section>.<field>=<value>.'
  return head + '\n' + textwrap.fill(text, WIDTH, initial_indent=' ' * 6, subsequent_indent=' ' * 6)


def format_help(doc: str, groups: Groups, common: Groups = ()) -> str:
  """The help text: `doc`, then each group's defined flags (undefined names are skipped)."""
  parts = [textwrap.dedent(doc).strip()]
  for title, names in [*groups, *common]:
    defined = [_name(flag) for flag in names if _name(flag) in flags.FLAGS]
    if defined:
      parts.append(f'{title}:\n' + '\n'.join(describe_flag(name) for name in defined))
  parts.append('--helpfull lists every flag of every library module.')
  return '\n\n'.join(parts) + '\n'


def print_help_and_exit(doc: str, groups: Groups, common: Groups = ()) -> None:
  sys.stdout.write(format_help(doc, groups, common))
  sys.stdout.flush()
  sys.exit(0)
