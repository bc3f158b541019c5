"""`lumiere-sample --mode sdedit` and `--style-from T2I_RUN --alpha A` write decodable MP4s; bad editing flags and a
style checkpoint whose spatial tree does not match are named."""

import pytest
from absl import app

from cli_runs import assert_decodable_clip, input_files, lumiere_sample, save_untrained  # noqa: F401


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """(tmp dir, base run, t2i run of the same shapes, t2i run of other widths), all untrained."""
  tmp = tmp_path_factory.mktemp('editing')
  return (tmp, save_untrained(tmp / 'base', 'base'), save_untrained(tmp / 't2i', 't2i'),
          save_untrained(tmp / 'narrow', 't2i', **{'model.channels': 8}))


def test_sdedit_and_stylization_write_decodable_clips(runs, lumiere_sample):  # noqa: F811
  tmp, base, t2i, _ = runs
  video_in = input_files(tmp)['in.mp4']
  for name, args in [('sdedit', ['--mode', 'sdedit', '--video', video_in, '--strength', '0.5']),
                     ('style', ['--style-from', t2i, '--alpha', '0.5'])]:
    lumiere_sample('--workdir', base, *args, '--out', str(tmp / f'{name}.mp4'))
    assert_decodable_clip(tmp / f'{name}.mp4')


def test_bad_editing_flags_are_named(runs, lumiere_sample):  # noqa: F811
  tmp, base, t2i, narrow = runs
  files = input_files(tmp)
  for args, message in [
      (['--style-from', t2i, '--alpha', '1.5'], r'--alpha=1.5 must be in \[0, 1\]'),
      (['--style-from', narrow, '--alpha', '0.5'], r'does not match the model\'s spatial parameters: mis_shaped'),
      (['--mode', 'sdedit', '--video', files['in.mp4'], '--strength', '2'], r'--strength=2.0: sdedit only'),
      (['--mode', 'i2v', '--image', files['in.png']], '--mode i2v needs a conditional-stage run, not a base one'),
  ]:
    with pytest.raises(app.UsageError, match=message):
      lumiere_sample('--workdir', base, *args, '--out', str(tmp / 'never.mp4'))
  assert not (tmp / 'never.mp4').exists()
