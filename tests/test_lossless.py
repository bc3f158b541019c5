"""Lossless video outputs: `.mkv` (FFV1) and `.png` frames decode to exactly the frames written, so the pixels the
editing modes keep (i2v's first frame, inpainting's unmasked region) reach the file unchanged; `.mp4` does not."""

import numpy as np
from PIL import Image
import pytest

from lumiere_jax import conditional
from lumiere_jax.data import video
from cli_runs import input_files, lumiere_sample, save_untrained  # noqa: F401


def _frames(seed=0, shape=(5, 13, 17, 3)) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, shape, np.uint8)


def test_ffv1_round_trip_is_exact_at_any_size(tmp_path):
  frames = _frames()
  written = video.write_video(tmp_path / 'clip.mkv', frames, 16)
  decoded, fps = video.decode_video(written[0].read_bytes())
  assert written == [tmp_path / 'clip.mkv'] and fps == 16
  np.testing.assert_array_equal(decoded, frames)


@pytest.mark.parametrize('out, first', [('clip.png', 'clip-0000.png'), ('frames/%03d.png', 'frames/000.png'),
                                        ('folder', 'folder/0000.png')])
def test_png_frames_round_trip_exactly(out, first, tmp_path):
  frames = _frames(1)
  written = video.write_video(tmp_path / out, frames, 16)
  assert len(written) == len(frames) and written[0] == tmp_path / first
  np.testing.assert_array_equal(np.stack([np.asarray(Image.open(path)) for path in written]), frames)


def test_mp4_is_lossy_and_unknown_suffixes_are_refused(tmp_path):
  frames = _frames(2, (4, 16, 16, 3))
  decoded, _ = video.decode_video(video.write_video(tmp_path / 'clip.mp4', frames, 16)[0].read_bytes())
  assert decoded.shape == frames.shape and np.abs(decoded.astype(int) - frames).max() > 0
  assert video.LOSSLESS_KINDS == ('mkv', 'png')
  with pytest.raises(ValueError, match=r"clip.avi: unknown video output '.avi'"):
    video.write_video(tmp_path / 'clip.avi', frames, 16)
  with pytest.raises(ValueError, match='one integer field'):
    video.output_kind(tmp_path / '%d-%d.png')


@pytest.fixture(scope='module')
def conditional_run(tmp_path_factory):
  """(tmp dir, an untrained conditional-stage micro run): the kept pixels do not depend on training."""
  tmp = tmp_path_factory.mktemp('lossless')
  return tmp, save_untrained(tmp / 'conditional', 'conditional')


def test_given_pixels_reach_lossless_files_exactly(conditional_run, lumiere_sample):  # noqa: F811
  tmp, workdir = conditional_run
  files = input_files(tmp)
  lumiere_sample('--workdir', workdir, '--mode', 'i2v', '--image', files['in.png'], '--out', str(tmp / 'i2v.png'))
  np.testing.assert_array_equal(np.asarray(Image.open(tmp / 'i2v-0000.png')), np.asarray(Image.open(files['in.png'])))

  lumiere_sample('--workdir', workdir, '--mode', 'inpaint', '--video', files['in.mp4'], '--mask', files['region.png'],
                 '--out', str(tmp / 'inpaint.mkv'))
  written, _ = video.decode_video((tmp / 'inpaint.mkv').read_bytes())
  given = conditional.read_clip(files['in.mp4'], 8, 16)  # the clip as the model was given it (decoded MP4)
  kept = np.asarray(Image.open(files['region.png'])) == 0
  np.testing.assert_array_equal(written[:, kept], given[:, kept])
  assert np.any(written[:, ~kept] != given[:, ~kept])  # the white region was generated, not copied
