"""Fault soak: N random SIGKILL / SIGTERM trials of a tiny training run, each followed by a rerun to the end.

    .venv/bin/python benchmarks/fault_soak.py --trials 20 [--seed 0] [--workdir DIR]

Two uninterrupted reference runs first: the first fills the compile cache (on a fresh checkout it compiles
everything), the second runs as every later run does, from the warm cache; both must end identical. Per trial: a
fresh workdir, a run sent SIGKILL or SIGTERM (chosen at random) at a uniformly random time in the first 90% of the
warm reference's wall time (Python start-up, set-up, compile, steps and asynchronous saves alike; the last 10% is
margin for runs a little faster than the reference, so that a signal seldom comes after the end), and a rerun on the
same workdir. A trial is bit-exact when the rerun's final checkpoint holds every state array and the data position
of the reference's. A run is interrupted when the signal reached it while it ran, and stopped short when it also
left its final checkpoint to the rerun. Time lost per kill: the interrupted run's and the rerun's wall time less the
warm reference's. The training process is the one of `tests/test_preemption.py` (micro config, 1 CPU device, the
tests' compile cache); not part of `make test`.
"""

import argparse
import pathlib
import random
import signal
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / 'tests'))

from test_preemption import STEPS, _committed_step, _tree_equal, final_checkpoint, run_process  # noqa: E402

SIGNAL_WINDOW = 0.9  # signals fall in this fraction of the warm reference's wall time


def _same_checkpoint(a, b) -> bool:
  return _tree_equal(a[0], b[0]) and a[1] == b[1]


def _last_line(output: str) -> str:
  """What the run was doing when it stopped: its last line of output, shortened."""
  lines = [line for line in output.splitlines() if line.strip()]
  return lines[-1][:60] if lines else '(no output yet)'


def trial(workdir: pathlib.Path, reference_checkpoint, reference_s: float, sig: signal.Signals, after_s: float) -> dict:
  """One interrupted run and its rerun; {'exact', 'lost_s', 'interrupted', 'stopped_short', 'last', 'error'}."""
  try:
    first = run_process(workdir, signal_after_s=after_s, sig=sig)
    stopped_short = _committed_step(workdir) != STEPS
    rerun = run_process(workdir)
    checkpoint = final_checkpoint(workdir)
  except (AssertionError, OSError, ValueError) as e:  # a bad exit status, a missing or unreadable final step
    return dict(exact=False, lost_s=float('nan'), interrupted=True, stopped_short=True, last='',
                error=str(e).splitlines()[0][:200])
  return dict(exact=_same_checkpoint(checkpoint, reference_checkpoint),
              lost_s=first['seconds'] + rerun['seconds'] - reference_s,
              interrupted=first['rc'] != 0 or 'SIGTERM' in first['output'], stopped_short=stopped_short,
              last=_last_line(first['output']), error='')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--trials', type=int, default=20)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workdir', default=None, help='where the runs go (default: a temporary directory)')
  args = parser.parse_args(argv)
  root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='fault_soak_'))
  rng = random.Random(args.seed)

  cold = run_process(root / 'reference_cold')
  reference = run_process(root / 'reference')
  reference_checkpoint = final_checkpoint(root / 'reference')
  reference_s = reference['seconds']
  agree = _same_checkpoint(final_checkpoint(root / 'reference_cold'), reference_checkpoint)
  window_s = SIGNAL_WINDOW * reference_s
  print(f'reference runs: {cold["seconds"]:.1f} s (filling the compile cache), {reference_s:.1f} s (warm); final '
        f'checkpoints {"identical" if agree else "DIFFERENT"}; signals in the first {window_s:.1f} s', flush=True)
  results = []
  for i in range(args.trials):
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    after_s = rng.uniform(0, window_s)
    result = trial(root / f'trial_{i:03d}', reference_checkpoint, reference_s, sig, after_s)
    results.append(result)
    stopped = ('stopped short' if result['stopped_short'] else 'final checkpoint already committed') if result[
        'interrupted'] else 'finished before the signal'
    print(f'trial {i + 1}/{args.trials}: {sig.name} after {after_s:5.1f} s -> '
          f'{"bit-exact" if result["exact"] else "DIFFERENT"} ({stopped}; last line: {result["last"]!r}), '
          f'time lost {result["lost_s"]:.1f} s{" " + result["error"] if result["error"] else ""}', flush=True)
  exact = sum(r['exact'] for r in results)
  interrupted = sum(r['interrupted'] for r in results)
  short = sum(r['interrupted'] and r['stopped_short'] for r in results)
  lost = sorted(r['lost_s'] for r in results if r['interrupted'] and r['exact'])
  median = f'{statistics.median(lost):.1f} s ({lost[0]:.1f}-{lost[-1]:.1f} s)' if lost else 'n/a'
  print(f'{exact}/{len(results)} bit-exact; {interrupted}/{len(results)} interrupted ({short} before their final '
        f'checkpoint); median time lost per kill {median} (warm reference run {reference_s:.1f} s)')
  return 0 if exact == len(results) and agree else 1


if __name__ == '__main__':
  sys.exit(main())
