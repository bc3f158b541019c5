"""UCF101 in its official layout, read with PyAV.

    <root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi
    <root>/ucfTrainTestlist/classInd.txt            "1 ApplyEyeMakeup" (1-based)
    <root>/ucfTrainTestlist/trainlist0{1,2,3}.txt   "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    <root>/ucfTrainTestlist/testlist0{1,2,3}.txt    "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
"""

import dataclasses
import pathlib

import numpy as np

from lumiere_jax.data import video

SUBSETS = ('train', 'test')


@dataclasses.dataclass(frozen=True)
class Clip:
  path: pathlib.Path
  label: int  # 0-based class index, in classInd.txt order


def _lists(root: pathlib.Path) -> pathlib.Path:
  lists = root / 'ucfTrainTestlist'
  if not (lists / 'classInd.txt').is_file():
    raise FileNotFoundError(f'{root}: not a UCF101 root (no ucfTrainTestlist/classInd.txt)')
  return lists


def read_classes(root: str | pathlib.Path) -> list[str]:
  """Class names in index order."""
  lines = (_lists(pathlib.Path(root)) / 'classInd.txt').read_text().split('\n')
  pairs = sorted((int(index), name) for index, name in (line.split() for line in lines if line.strip()))
  if [index for index, _ in pairs] != list(range(1, len(pairs) + 1)):
    raise ValueError(f'{root}/ucfTrainTestlist/classInd.txt: indices are not 1..{len(pairs)}')
  return [name for _, name in pairs]


def read_split(root: str | pathlib.Path, split: int = 1, subset: str = 'train') -> list[Clip]:
  """The clips of one official split (1, 2 or 3) and subset ('train' or 'test'); labels from the class folder."""
  if split not in (1, 2, 3) or subset not in SUBSETS:
    raise ValueError(f'split={split}, subset={subset!r}: need split 1, 2 or 3 and subset in {SUBSETS}')
  root = pathlib.Path(root)
  index = {name: i for i, name in enumerate(read_classes(root))}
  clips = []
  for line in (_lists(root) / f'{subset}list0{split}.txt').read_text().split('\n'):
    if not line.strip():
      continue
    relative = line.split()[0]
    name = relative.split('/')[0]
    if name not in index:
      raise ValueError(f'{subset}list0{split}.txt: class {name!r} of {relative} is not in classInd.txt')
    clips.append(Clip(root / 'UCF-101' / relative, index[name]))
  return clips


def class_frequencies(clips: list[Clip], num_classes: int) -> np.ndarray:
  """Fraction of the clips in each class, float64 (num_classes,)."""
  counts = np.bincount([clip.label for clip in clips], minlength=num_classes)
  return counts / counts.sum()


def load_clip(clip: Clip, num_frames: int = 16) -> np.ndarray:
  """The first `num_frames` frames, uint8 (T, H, W, 3); ValueError naming the file if it is shorter or unreadable."""
  try:
    frames, _ = video.decode_video(clip.path.read_bytes(), max_frames=num_frames)
  except (OSError, ValueError) as e:  # BadRecordError is a ValueError
    raise ValueError(f'{clip.path}: {e}') from e
  if len(frames) < num_frames:
    raise ValueError(f'{clip.path}: {len(frames)} frames, fewer than the {num_frames} the protocol takes')
  return frames
