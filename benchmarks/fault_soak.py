"""Fault soak: N random SIGKILL / SIGTERM trials of a tiny training run, each followed by a rerun to the end.

    .venv/bin/python benchmarks/fault_soak.py --trials 20 [--seed 0] [--workdir DIR]

One uninterrupted reference run, then per trial: a fresh workdir, a run sent SIGKILL or SIGTERM (chosen at random)
at a uniformly random time within the reference's wall time (Python start-up, set-up, compile, steps and
asynchronous saves alike), and a rerun on the same workdir. A trial is bit-exact when the rerun's final checkpoint
holds every state array and the data position of the reference's. Time lost per kill: the interrupted run's and the
rerun's wall time less the reference's. The training process is the one of `tests/test_preemption.py` (micro
config, 1 CPU device, the tests' compile cache); not part of `make test`.
"""

import argparse
import pathlib
import random
import signal
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / 'tests'))

from test_preemption import _tree_equal, final_checkpoint, run_process  # noqa: E402


def trial(workdir: pathlib.Path, reference_checkpoint, reference_s: float, sig: signal.Signals, after_s: float) -> dict:
  """One interrupted run and its rerun; {'exact', 'lost_s', 'interrupted', 'error'}."""
  try:
    first = run_process(workdir, signal_after_s=after_s, sig=sig)
    rerun = run_process(workdir)
    state, position = final_checkpoint(workdir)
  except (AssertionError, OSError, ValueError) as e:  # a bad exit status, a missing or unreadable final step
    return dict(exact=False, lost_s=float('nan'), interrupted=True, error=str(e).splitlines()[0][:200])
  exact = _tree_equal(state, reference_checkpoint[0]) and position == reference_checkpoint[1]
  return dict(exact=exact, lost_s=first['seconds'] + rerun['seconds'] - reference_s, interrupted=first['rc'] != 0 or
              'SIGTERM' in first['output'], error='')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--trials', type=int, default=20)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workdir', default=None, help='where the runs go (default: a temporary directory)')
  args = parser.parse_args(argv)
  root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='fault_soak_'))
  rng = random.Random(args.seed)

  reference = run_process(root / 'reference')
  reference_checkpoint = final_checkpoint(root / 'reference')
  print(f'reference run: {reference["seconds"]:.1f} s', flush=True)
  results = []
  for i in range(args.trials):
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    after_s = rng.uniform(0, reference['seconds'])
    result = trial(root / f'trial_{i:03d}', reference_checkpoint, reference['seconds'], sig, after_s)
    results.append(result)
    print(f'trial {i + 1}/{args.trials}: {sig.name} after {after_s:5.1f} s -> '
          f'{"bit-exact" if result["exact"] else "DIFFERENT"}'
          f'{"" if result["interrupted"] else " (finished before the signal)"}, time lost {result["lost_s"]:.1f} s'
          f'{" " + result["error"] if result["error"] else ""}', flush=True)
  exact = sum(r['exact'] for r in results)
  lost = [r['lost_s'] for r in results if r['interrupted'] and r['exact']]
  median = f'{statistics.median(lost):.1f} s' if lost else 'n/a'
  print(f'{exact}/{len(results)} bit-exact; {len(lost)} interrupted; median time lost per kill {median} '
        f'(reference run {reference["seconds"]:.1f} s)')
  return 0 if exact == len(results) else 1


if __name__ == '__main__':
  sys.exit(main())
