"""Progress of long loops in lines a piped log keeps readable: `[  3/10  30% eta    12s] sampling chunks`.

A `Progress` prints one line when it starts, then at most one line every `every_s` seconds, and one when the last unit
is done; whole lines only (no carriage returns) and on process 0 only. The rate is measured from the end of the first
unit, so a first unit that compiles (or warms a cache) does not inflate the ETA; until a second unit is done the ETA
reads `?`. `prefix` is also the look of the training loop's lines (train/metrics.py).
"""

from collections.abc import Callable, Iterable, Iterator
import math
import time

import jax


def eta_text(seconds: float) -> str:
  """`   12s`, or `     ?` while the rate is unknown."""
  return '     ?' if not math.isfinite(seconds) else f'{seconds:5.0f}s'


def prefix(done: int, total: int, eta_s: float, width: int | None = None) -> str:
  """`[  done/total pct eta    12s]`; `width` pads `done` (default: the digits of `total`)."""
  fraction = done / total if total else 1.0
  return f'[{done:>{width or len(str(total))}}/{total} {fraction:4.0%} eta {eta_text(eta_s)}]'


def is_process_zero() -> bool:
  """Whether this process prints; asked without initialising a backend (no `jax.distributed`: one process)."""
  return not jax.distributed.is_initialized() or jax.process_index() == 0


def _print_line(text: str) -> None:
  print(text, flush=True)


class Progress:
  """Counts units of work toward `total` and prints progress lines about `what` (see the module docstring)."""

  def __init__(self, total: int, what: str, *, every_s: float = 5.0, enabled: bool | None = None,
               log: Callable[[str], None] = _print_line, clock: Callable[[], float] = time.monotonic):
    self.total, self.what, self.done = total, what, 0
    self._every_s, self._log, self._clock = every_s, log, clock
    self._enabled = is_process_zero() if enabled is None else enabled
    self._start = self._last_line = clock()
    self._first = None  # (time, done) at the end of the first unit: the rate is measured from there
    if self._enabled and total:
      self._log(f'{what}: {total} to do...')

  def eta_s(self) -> float:
    """Seconds left at the rate since the first unit ended (inf before a later unit is done)."""
    if self._first is None or self.done <= self._first[1]:
      return math.inf
    elapsed = self._clock() - self._first[0]
    return elapsed / (self.done - self._first[1]) * (self.total - self.done) if elapsed > 0 else 0.0

  def advance(self, count: int = 1, note: str = '') -> None:
    """`count` more units are done; prints a line if `every_s` passed since the last one, or if all are done."""
    self.done += count
    now = self._clock()
    if self._first is None:
      self._first = (now, self.done)
    if not self._enabled:
      return
    note = f' {note}' if note else ''
    if self.done >= self.total:
      self._log(f'{prefix(self.done, self.total, 0.0)} {self.what}{note} (done in {now - self._start:.1f}s)')
    elif now - self._last_line >= self._every_s:
      self._log(f'{prefix(self.done, self.total, self.eta_s())} {self.what}{note}')
    else:
      return
    self._last_line = now


def track(items: Iterable, what: str, total: int | None = None, **kwargs) -> Iterator:
  """Yields `items`, counting one unit each time the loop body over the previous item has finished."""
  if total is None:
    items = list(items)
    total = len(items)
  progress = Progress(total, what, **kwargs)
  for item in items:
    yield item
    progress.advance()
