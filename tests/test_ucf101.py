"""The UCF101 reader on a miniature copy of the official layout, written by the test."""

import av
import numpy as np
import pytest

from lumiere_jax.eval import ucf101

CLASSES = ['ApplyEyeMakeup', 'Basketball', 'YoYo']


def _write_avi(path, frames=20, size=(24, 32), level=0):
  path.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(path), 'w') as container:
    stream = container.add_stream('mpeg4', rate=25)
    stream.height, stream.width = size
    stream.pix_fmt = 'yuv420p'
    for t in range(frames):
      image = np.full((*size, 3), (level + 10 * t) % 256, np.uint8)
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')))
    container.mux(stream.encode())


def write_ucf101(directory):
  """A miniature UCF101 root: CLASSES with 2, 3, 4 clips (20 frames, 24x32); the first of each in the test list."""
  lists = directory / 'ucfTrainTestlist'
  lists.mkdir(parents=True)
  (lists / 'classInd.txt').write_text(''.join(f'{i + 1} {name}\r\n' for i, name in enumerate(CLASSES)))
  train, test = [], []
  for label, name in enumerate(CLASSES):
    for group in range(1, 3 + label):  # 2, 3, 4 clips per class
      relative = f'{name}/v_{name}_g{group:02d}_c01.avi'
      _write_avi(directory / 'UCF-101' / relative, level=40 * label)
      (train if group > 1 else test).append(relative)
  (lists / 'trainlist01.txt').write_text(''.join(f'{r} {CLASSES.index(r.split("/")[0]) + 1}\n' for r in train))
  (lists / 'testlist01.txt').write_text(''.join(f'{r}\n' for r in test))
  return directory


@pytest.fixture()
def root(tmp_path):
  return write_ucf101(tmp_path)


def test_classes_splits_and_frequencies(root):
  assert ucf101.read_classes(root) == CLASSES
  train, test = ucf101.read_split(root, 1, 'train'), ucf101.read_split(root, 1, 'test')
  assert [c.label for c in test] == [0, 1, 2]
  assert len(train) == 1 + 2 + 3 and all(c.path.is_file() for c in train + test)
  np.testing.assert_allclose(ucf101.class_frequencies(train + test, 3), np.array([2, 3, 4]) / 9)


def test_load_clip_takes_the_first_frames(root):
  clip = ucf101.read_split(root, 1, 'test')[1]
  frames = ucf101.load_clip(clip, 16)
  assert frames.shape == (16, 24, 32, 3) and frames.dtype == np.uint8
  np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), (40 + 10 * np.arange(16)) % 256, atol=4)
  with pytest.raises(ValueError, match='fewer than the 32'):
    ucf101.load_clip(clip, 32)


def test_bad_layouts_name_the_problem(tmp_path, root):
  with pytest.raises(FileNotFoundError, match='classInd.txt'):
    ucf101.read_classes(tmp_path / 'nowhere')
  with pytest.raises(ValueError, match='split=4'):
    ucf101.read_split(root, 4)
  (root / 'ucfTrainTestlist' / 'testlist01.txt').write_text('Juggling/v_Juggling_g01_c01.avi\n')
  with pytest.raises(ValueError, match="class 'Juggling'"):
    ucf101.read_split(root, 1, 'test')
  broken = ucf101.Clip(root / 'UCF-101' / 'broken.avi', 0)
  broken.path.write_bytes(b'RIFF garbage')
  with pytest.raises(ValueError, match='broken.avi'):
    ucf101.load_clip(broken)
