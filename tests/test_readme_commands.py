"""scripts/check_readme_commands.py finds every command of README.md (the script itself runs them; too slow here)."""

import configparser
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('check_readme_commands', ROOT / 'scripts/check_readme_commands.py')
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def _console_scripts() -> list[str]:
  parser = configparser.ConfigParser()
  parser.read(ROOT / 'setup.cfg')
  entries = parser['options.entry_points']['console_scripts'].strip().splitlines()
  return [entry.split('=')[0].strip() for entry in entries]


def test_the_readme_set_up_commands_and_every_cli_are_found():
  texts = [command.text for command in check.extract_commands((ROOT / 'README.md').read_text())]
  assert 'make demo' in texts and 'make test' in texts
  for tool in _console_scripts():
    assert any(text.startswith(f'.venv/bin/{tool} ') for text in texts), tool
  assert all('#' not in text and '\\' not in text for text in texts)  # comments gone, continuations joined


def test_blocks_continuations_comments_and_optional_parts():
  readme = '\n'.join([
      'Text with `inline code`.',
      '```', 'path,caption', 'a.mp4,"a # not a comment"', '```',
      '```bash',
      '# a comment line',
      '.venv/bin/lumiere-train --config configs/lumiere.py:stage=base,size=small \\',
      '    --config.model.init_from=runs/t2i  # trailing comment',
      '.venv/bin/lumiere-sample --prompt "a # b" --out x.mp4 [--steps 50] [--sampler ddim|ancestral]',
      '```',
  ])
  commands = check.extract_commands(readme)
  assert [command.line for command in commands] == [8, 10]  # the CSV block is no shell block
  assert commands[0].text == ('.venv/bin/lumiere-train --config configs/lumiere.py:stage=base,size=small '
                              '--config.model.init_from=runs/t2i')
  assert commands[1].text.startswith('.venv/bin/lumiere-sample --prompt "a # b" --out x.mp4 [--steps 50]')
  short = check.shortened(commands[0].text)
  assert 'size=tiny' in short and short.endswith(' '.join(check.TRAIN_OVERRIDES))
  assert check.shortened(commands[1].text) == '.venv/bin/lumiere-sample --prompt "a # b" --out x.mp4 --steps 2'


def test_downloads_and_placeholders_are_skipped_with_a_reason():
  command = lambda text: check.Command(1, text)  # noqa: E731
  assert 'download' in check.skip_reason(command("pip install -e '.[eval]'"))
  assert 'placeholder' in check.skip_reason(command('lumiere-train --config.text.width=<d_model>'))
  assert check.skip_reason(command('make demo')) and check.skip_reason(command('make demo'), run_make=True) is None
  assert check.skip_reason(command('.venv/bin/lumiere-data fake-ucf101 --out runs/ucf101-fake')) is None
