"""The options of `lumiere-data prepare` (one flag each in `cli/data.py`) and their checks, before anything is read."""

import dataclasses
import math
import os

from lumiere_jax.ingest.inputs import PrepareError


@dataclasses.dataclass(frozen=True)
class Options:
  """Everything the output depends on (the worker count is not part of it); see `cli/data.py` for each flag."""

  videos: str = ''
  captions: str = ''
  manifest: str = ''
  clip_seconds: float = 5.0
  fps: float = 16.0
  size: int = 128
  min_seconds: float = 1.0
  min_frames: int = 8
  min_size: int = 0
  max_pixels: int = 8192 * 4320
  keep_tail: bool = False
  num_shards: int = 0

  def checked(self) -> 'Options':
    """These options with absolute paths; `PrepareError` naming the flag when they cannot work."""
    if bool(self.manifest) == bool(self.videos or self.captions) or bool(self.videos) != bool(self.captions):
      raise PrepareError('give either --manifest FILE, or --videos DIR and --captions FILE')
    for flag, is_kind, kind in (('videos', os.path.isdir, 'folder'), ('captions', os.path.isfile, 'file'),
                                ('manifest', os.path.isfile, 'file')):
      path = getattr(self, flag)
      if path and not os.path.exists(path):
        raise PrepareError(f'--{flag} {path}: no such file or folder')
      if path and not is_kind(path):
        raise PrepareError(f'--{flag} {path}: not a {kind}')
    for flag in ('clip_seconds', 'fps', 'min_seconds'):
      if not math.isfinite(getattr(self, flag)):
        raise PrepareError(f'--{flag} must be a finite number, got {getattr(self, flag)}')
    if not math.isfinite(self.clip_seconds * self.fps):
      raise PrepareError(f'--clip_seconds x --fps = {self.clip_seconds * self.fps} frames: too many')
    frames = round(self.clip_seconds * self.fps)
    for wrong, message in ((self.fps <= 0, '--fps must be > 0'), (self.size < 0, '--size must be >= 0'),
                           (frames < max(1, self.min_frames), f'--clip_seconds x --fps = {frames} frames, fewer '
                                                               f'than --min_frames {self.min_frames}'),
                           (self.clip_seconds < self.min_seconds, '--clip_seconds is below --min_seconds'),
                           (self.max_pixels < 1, '--max_pixels must be >= 1'),
                           (self.num_shards < 0, '--num_shards must be >= 0 (0: automatic)')):
      if wrong:
        raise PrepareError(message)
    paths = {flag: os.path.abspath(getattr(self, flag)) for flag in ('videos', 'captions', 'manifest')
             if getattr(self, flag)}
    return dataclasses.replace(self, **paths)
