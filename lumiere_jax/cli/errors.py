"""The command-line tools' handling of expected errors: one message on stderr and exit status 1, the traceback only
with `--debug`.

Expected are the errors a user's input or environment causes, whose message already names the problem: every
exception class this package defines (`ConfigError`, `BadDataError`, `NonfiniteError`, `PrepareError`,
`RestoreError`, ...) and `ValueError` / `OSError` (a bad value, a missing or unwritable path). Anything else is a bug
and keeps its traceback; absl's `UsageError` keeps absl's usage message.

`run` is also the one place every tool starts through: it answers `--help` (`usage.py`) and turns on the persistent
compile cache (`compile_cache.py`).
"""

from collections.abc import Callable
import sys

from absl import app, flags

from lumiere_jax.cli import compile_cache, usage

_DEBUG = flags.DEFINE_bool('debug', False, 'Show the traceback of an expected error (bad config, data or path) '
                           'instead of its one-line message.')
_COMPILE_CACHE = flags.DEFINE_bool('compile_cache', True, 'Keep compiled XLA programs on disk for reruns and resumes '
                                   '($JAX_COMPILATION_CACHE_DIR, else $LUMIERE_CACHE_DIR/jax, else '
                                   '~/.cache/lumiere_jax/jax); LUMIERE_COMPILE_CACHE=0 also turns it off.')
EXIT_STATUS = 1
COMMON_FLAGS = ('Every tool', ('debug', 'compile_cache'))


def run(main: Callable[[list[str]], None], name: str, groups: usage.Groups = (), doc: str | None = None) -> None:
  """`absl.app.run(main)` for the command `name`, an expected error printed as `name: <kind>: <message>` on stderr
  with exit status `EXIT_STATUS`. `--help` prints `doc` (default: the docstring of `main`'s module) and the flags of
  `groups`, and exits 0."""
  if usage.asks_for_help(sys.argv):
    usage.print_help_and_exit(sys.modules[main.__module__].__doc__ if doc is None else doc, groups, [COMMON_FLAGS])
  app.run(lambda argv: _reported(main, argv, name))


def is_expected(error: BaseException) -> bool:
  """Whether `error` is a user's problem with a clear message (above) rather than a bug."""
  return isinstance(error, (ValueError, OSError)) or type(error).__module__.partition('.')[0] == 'lumiere_jax'


def message(error: BaseException) -> str:
  """The error's kind and message (an `OSError`'s without its errno; a `ConfigError` lists a field a line)."""
  if isinstance(error, OSError) and error.strerror and error.filename:
    return f'{type(error).__name__}: {error.filename}: {error.strerror}'
  return f'{type(error).__name__}: {error}'


def _reported(main: Callable[[list[str]], None], argv: list[str], name: str) -> None:
  try:
    compile_cache.configure(_COMPILE_CACHE.value)
    return main(argv)
  except Exception as e:
    if _DEBUG.value or not is_expected(e):
      raise
    print(f'{name}: {message(e)} (--debug shows the traceback)', file=sys.stderr, flush=True)
    sys.exit(EXIT_STATUS)
