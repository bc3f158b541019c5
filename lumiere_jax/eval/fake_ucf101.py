"""A fake UCF101 root for trying the evaluation without the real set: moving-shape clips (`data/synthetic.py`) filed
under real UCF101 class names, in the official layout `eval/ucf101.py` reads (`lumiere-data fake-ucf101 --out DIR`).

Its FVD numbers mean nothing about a model's quality: it exists so that `lumiere-eval` can be run end to end in
minutes on a CPU (the README's "Evaluating on UCF101" smoke path).
"""

import fractions
import pathlib

import av
import numpy as np

from lumiere_jax.data import synthetic

# Real class names, so the shipped prompts (configs/ucf101_prompts.json) cover them.
CLASSES = ('ApplyEyeMakeup', 'Basketball', 'Biking', 'Drumming', 'Fencing', 'JumpRope', 'Surfing', 'YoYo')
FPS = 25  # UCF101's frame rate


def _write_avi(path: pathlib.Path, frames: np.ndarray) -> None:
  """MPEG-4 part 2 in AVI, as UCF101 ships (its files are Xvid)."""
  with av.open(str(path), 'w', format='avi') as container:
    stream = container.add_stream('mpeg4', rate=fractions.Fraction(FPS))
    stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], 'yuv420p'
    stream.options = {'qscale': '2'}
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())


def write_fake_ucf101(root: str | pathlib.Path, *, num_classes: int = 4, clips_per_class: int = 3,
                      num_frames: int = 16, size: int = 16, seed: int = 0) -> pathlib.Path:
  """Writes `num_classes` classes of `clips_per_class` clips (>= num_frames frames of size x size) under `root`:
  group 1 of each class in testlist01.txt, the others in trainlist01.txt. Returns the root.

  The default size is the tiny models' frame size: real and generated clips then share one I3D compile.
  """
  if not 1 <= num_classes <= len(CLASSES) or clips_per_class < 2 or size < 8 or size % 2:
    raise ValueError(f'num_classes={num_classes} must be in [1, {len(CLASSES)}], clips_per_class={clips_per_class} '
                     f'>= 2 (one test, the rest train) and size={size} even and >= 8')
  root = pathlib.Path(root)
  lists = root / 'ucfTrainTestlist'
  lists.mkdir(parents=True, exist_ok=True)
  classes = CLASSES[:num_classes]
  train, test = [], []
  for label, name in enumerate(classes):
    (root / 'UCF-101' / name).mkdir(parents=True, exist_ok=True)
    for group in range(1, clips_per_class + 1):
      relative = f'{name}/v_{name}_g{group:02d}_c01.avi'
      frames, _, _ = synthetic.make_clip(np.random.default_rng([seed, label, group]), size, num_frames)
      _write_avi(root / 'UCF-101' / relative, frames)
      (test if group == 1 else train).append((relative, label + 1))
  (lists / 'classInd.txt').write_text(''.join(f'{i + 1} {name}\n' for i, name in enumerate(classes)))
  (lists / 'trainlist01.txt').write_text(''.join(f'{relative} {label}\n' for relative, label in train))
  (lists / 'testlist01.txt').write_text(''.join(f'{relative}\n' for relative, _ in test))
  return root
