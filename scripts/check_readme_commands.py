"""Runs every shell command of README.md's code blocks at tiny size in a temporary directory; pass/fail per command.

    .venv/bin/python scripts/check_readme_commands.py [--list] [--only REGEX] [--keep] [--timeout_s 900]

The temporary directory stands for a fresh clone: `.venv`, `configs` and `launch` are links to this checkout, and the
inputs the README assumes the user has (`my_videos/`, `my_images/`, `in.png`, `in.mp4`, masks, `low.mp4`) are made
there from the synthetic moving shapes, as are the runs no README command makes (`runs/conditional`, `runs/ssr`,
`runs/t2i_style`; rows marked `fixture`). Commands run in README order, shortened: `size=small` becomes `size=tiny`,
training takes 2 steps of batch 4, sampling and evaluation 2 denoising steps; `[optional]` parts are dropped.
Skipped, with the reason: commands that download or need what is not here (pip installs, DeepFloyd or T5 weights,
UCF101, a TPU), `<placeholder>` values, and `make test` / `make demo` (the whole suite; a full demo) unless `--make`.
Not part of the test suite (it takes tens of minutes on 2 cores); tests/test_readme_commands.py checks the extractor.
"""

import argparse
import dataclasses
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINKED = ('.venv', 'configs', 'launch', 'Makefile', 'setup.cfg', 'pyproject.toml', 'lumiere_jax', 'README.md')
TRAIN_OVERRIDES = ('--config.train.steps=2', '--config.train.batch_size=4', '--config.data.synthetic_clips=8',
                   '--config.sample.steps=2')
ABSL_LOG = re.compile(r'^[IWEF]\d{4} ')  # library log lines (orbax, absl): not the command's own last word
# (pattern in the command, reason it is skipped)
SKIPS = (
    (r'^pip install', 'installs packages (a download)'),
    (r'IF-I|IF-II|if-i-xl|if-ii-l|if_base|if_ssr', 'needs the DeepFloyd IF weights (a download)'),
    (r'/path/to/t5', 'needs a T5 checkpoint (a download)'),
    (r'/data/UCF101', 'needs the UCF101 dataset (a download; the smoke path below uses a fake one)'),
    (r'<[^>]+>', 'a <placeholder> the user fills in'),
    (r'TPU_NAME=|lumiere-aot', 'needs a TPU slice or the tpu extra (libtpu, a download)'),
    (r'^make test', 'runs the whole test suite (30 minutes; use make test itself)'),
    (r'^make demo', 'the full demo (tens of minutes on 2 cores; --make runs it)'),
)
# Runs the README uses but never makes: (directory, command), made before the first command that reads them.
FIXTURE_RUNS = {
    'runs/conditional': '.venv/bin/lumiere-train --config configs/lumiere.py:stage=conditional,size=tiny '
                        '--workdir runs/conditional --config.model.init_from=runs/base',
    'runs/ssr': '.venv/bin/lumiere-train --config configs/lumiere.py:stage=ssr,size=tiny --workdir runs/ssr '
                '--config.model.init_from=none',
    'runs/t2i_style': 'ln -s t2i runs/t2i_style',
}


@dataclasses.dataclass(frozen=True)
class Command:
  line: int  # README line where the command starts
  text: str  # as written: continuation lines joined, comments removed


def code_blocks(markdown: str) -> list[tuple[int, str, list[str]]]:
  """(first line number, language, lines) of every fenced code block."""
  blocks, current = [], None
  for number, line in enumerate(markdown.splitlines(), 1):
    fence = re.match(r'^\s*```(\w*)', line)
    if fence and current is None:
      current = (number + 1, fence.group(1), [])
    elif fence:
      blocks.append(current)
      current = None
    elif current is not None:
      current[2].append(line)
  return blocks


def _without_comment(line: str) -> str:
  """The line up to a `#` that starts a shell comment (outside quotes, at the start or after a blank)."""
  quote = None
  for i, char in enumerate(line):
    if quote:
      quote = None if char == quote else quote
    elif char in '\'"':
      quote = char
    elif char == '#' and (i == 0 or line[i - 1].isspace()):
      return line[:i].rstrip()
  return line.rstrip()


def extract_commands(markdown: str) -> list[Command]:
  """Every command of the bash / sh blocks, in order."""
  commands = []
  for first, language, lines in code_blocks(markdown):
    if language not in ('bash', 'sh', 'shell'):
      continue
    pending, start = '', None
    for offset, raw in enumerate(lines):
      line = _without_comment(raw.strip())
      if not line:
        continue
      start = first + offset if not pending else start
      if line.endswith('\\'):
        pending += line[:-1].rstrip() + ' '
        continue
      commands.append(Command(start, pending + line))
      pending = ''
  return commands


def skip_reason(command: Command, run_make: bool = False) -> str | None:
  for pattern, reason in SKIPS:
    if re.search(pattern, command.text) and not (run_make and command.text.startswith('make demo')):
      return reason
  return None


def shortened(text: str) -> str:
  """The command at tiny size: optional `[...]` parts dropped, small -> tiny, short training / sampling."""
  text = re.sub(r'\s*\[[^\[\]]*\]', '', text)  # `[--steps 50]`, `configs/eval_ucf101.py[:n=...]`
  text = text.replace('size=small', 'size=tiny')
  if re.search(r'lumiere-train|^launch/local\.sh', text):
    text += ' ' + ' '.join(TRAIN_OVERRIDES)
  if 'lumiere-sample' in text:
    text += ' --steps 2'
  if 'lumiere-eval' in text:
    text += ' --config.sample_steps=2'
  return text


def make_inputs(directory: pathlib.Path) -> None:
  """The user's files the README assumes, from the synthetic moving shapes (tiny: 16x16 frames)."""
  sys.path.insert(0, str(ROOT))
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from lumiere_jax.data import synthetic, video  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  for name, size, frames in (('my_videos/shapes/a.mp4', 48, 96), ('my_videos/shapes/b.mp4', 48, 96),
                             ('in.mp4', 16, 8), ('low.mp4', 16, 8)):
    clip = synthetic.make_clip(rng, size, frames)[0]
    (directory / name).parent.mkdir(parents=True, exist_ok=True)
    video.write_mp4(directory / name, clip, 16)
  (directory / 'my_videos/captions.csv').write_text('path,caption\nshapes/a.mp4,a moving shape\n'
                                                    'shapes/b.mp4,another moving shape\n')
  (directory / 'my_images').mkdir()
  rows = ['path,caption']
  for i in range(4):
    frame, caption, _ = synthetic.make_clip(rng, 32, 1)
    Image.fromarray(frame[0]).save(directory / f'my_images/{i}.png')
    rows.append(f'{i}.png,{caption}')
  (directory / 'my_images/captions.csv').write_text('\n'.join(rows) + '\n')
  Image.fromarray(synthetic.make_clip(rng, 16, 1)[0][0]).save(directory / 'in.png')
  mask = np.zeros((16, 16), np.uint8)
  mask[4:12, 4:12] = 255
  Image.fromarray(mask).save(directory / 'mask.png')
  Image.fromarray(mask).save(directory / 'region.png')


def run(text: str, cwd: pathlib.Path, timeout_s: float, log: pathlib.Path) -> tuple[str, float, str]:
  """('pass' | 'FAIL' | 'TIMEOUT', seconds, the last line of its output); the whole output goes to `log`."""
  start = time.monotonic()
  log.parent.mkdir(exist_ok=True)
  with open(log, 'w') as output:
    output.write(f'$ {text}\n')
    output.flush()
    try:
      result = subprocess.run(['bash', '-c', text], cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
      return 'TIMEOUT', time.monotonic() - start, f'see {log}'
  lines = [line for line in log.read_text().splitlines()[1:] if line.strip() and not ABSL_LOG.match(line)]
  status = 'pass' if result.returncode == 0 else 'FAIL'
  return status, time.monotonic() - start, lines[-1][:160] if lines else ''


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--list', action='store_true', help='print the commands as they would run, run nothing')
  parser.add_argument('--only', default='', help='run only the commands matching this regex (the runs they read '
                      'must come from commands selected too)')
  parser.add_argument('--make', action='store_true', help='run make demo too')
  parser.add_argument('--keep', action='store_true', help='keep the temporary directory (logs/: each output)')
  parser.add_argument('--timeout_s', type=float, default=900)
  args = parser.parse_args()
  commands = extract_commands((ROOT / 'README.md').read_text())
  if args.list:
    for command in commands:
      reason = skip_reason(command, args.make)
      print(f'README:{command.line}: ' + (f'SKIP ({reason}) {command.text}' if reason else shortened(command.text)))
    return 0
  directory = pathlib.Path(tempfile.mkdtemp(prefix='readme-commands-'))
  for name in LINKED:
    (directory / name).symlink_to(ROOT / name)
  make_inputs(directory)
  env_note = f'LUMIERE_DATA_DIR={directory}/data'
  results = []
  for command in commands:
    reason = skip_reason(command, args.make)
    if reason or (args.only and not re.search(args.only, command.text)):
      results.append(('skip', 0.0, reason or 'not selected', command.line, command.text))
      continue
    for run_dir, fixture in FIXTURE_RUNS.items():
      if run_dir in command.text and not (directory / run_dir).exists():
        log = directory / 'logs' / f'fixture-{pathlib.Path(run_dir).name}.log'
        results.append((*run(f'{env_note} {shortened(fixture)}', directory, args.timeout_s, log), 'fixture', fixture))
        print(f'{results[-1][0]} {results[-1][1]:.0f}s fixture: {fixture}', flush=True)
    log = directory / 'logs' / f'readme-{command.line}.log'
    results.append((*run(f'{env_note} {shortened(command.text)}', directory, args.timeout_s, log), command.line,
                    command.text))
    print(f'{results[-1][0]} {results[-1][1]:.0f}s README:{command.line}: {command.text}', flush=True)
  print('\nstatus   seconds  where        command  (last output line)')
  for status, seconds, note, line, text in results:
    where = f'README:{line}' if line != 'fixture' else 'fixture'
    print(f'{status:8} {seconds:7.0f}  {where:12} {text[:100]}\n{"":31}({note})')
  if not args.keep:
    shutil.rmtree(directory, ignore_errors=True)
  else:
    print(f'kept {directory}')
  return int(any(status in ('FAIL', 'TIMEOUT') for status, *_ in results))


if __name__ == '__main__':
  sys.exit(main())
