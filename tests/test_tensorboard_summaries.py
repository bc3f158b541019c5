"""What `MetricWriter` puts in TensorBoard besides scalars (the config as hparams, sample videos as animated GIFs)
and the optional W&B run (a fake `wandb` module: no network, no real wandb). Event files are read back by their own
record framing and protos, not by the writer's code."""

import io
import struct
import sys
import types

import numpy as np
import pytest
from PIL import Image, ImageSequence
from tensorboardX.proto import event_pb2, plugin_hparams_pb2

from lumiere_jax import config as config_lib, validation
from lumiere_jax.train import metrics as metrics_lib
from micro import micro_config
from test_dry_run import dry_run  # noqa: F401  (a fixture)
from test_cli_errors import TRAIN_CONFIG

PROMPTS = ('a red circle moving right', 'a blue square moving up')


def _events(directory) -> list:
  """Every Event of the event files under `directory` (TFRecord framing: length, crc, data, crc)."""
  events = []
  for path in sorted(directory.rglob('events.out.tfevents.*')):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
      offset += 12 + length + 4
  return events


def _values(directory) -> dict:
  """Summary values by tag, with the step they were written at."""
  return {value.tag: (event.step, value) for event in _events(directory) if event.HasField('summary')
          for value in event.summary.value}


def _videos() -> np.ndarray:
  """Two 3-frame 8x8 clips of a few flat colours (exact through a GIF palette), every frame different."""
  videos = np.zeros((2, 3, 8, 8, 3), np.uint8)
  for i in range(2):
    for t in range(3):
      videos[i, t, :, :4] = (200, 40 * t, 30 * i)
  return videos


def test_config_goes_to_tensorboard_as_hparams(tmp_path):
  writer = metrics_lib.MetricWriter(tmp_path, total_steps=10, enabled=True)
  config = micro_config()
  writer.set_config(config)
  writer.write(2, {'loss': 0.5, 'grad_norm': 1.0})
  writer.close()
  values = _values(tmp_path / 'tensorboard')
  start = plugin_hparams_pb2.HParamsPluginData.FromString(
      values['_hparams_/session_start_info'][1].metadata.plugin_data.content).session_start_info
  assert start.hparams['model.image_size'].number_value == 16
  assert start.hparams['stage'].string_value == 'base'
  assert start.hparams['model.channel_mults'].string_value == repr(config.model.channel_mults)  # tuples as text
  experiment = plugin_hparams_pb2.HParamsPluginData.FromString(
      values['_hparams_/experiment'][1].metadata.plugin_data.content).experiment
  assert {info.name.tag for info in experiment.metric_infos} == {'loss', 'grad_norm'}
  assert values['loss'][1].simple_value == 0.5


def test_samples_go_to_tensorboard_as_animated_gifs_with_captions(tmp_path):
  writer = metrics_lib.MetricWriter(tmp_path, total_steps=10, enabled=True)
  videos = _videos()
  writer.write_samples(4, videos, PROMPTS, fps=8)
  writer.close()
  values = _values(tmp_path / 'tensorboard')
  for i, tag in enumerate(['samples/00_a_red_circle_moving_right', 'samples/01_a_blue_square_moving_up']):
    step, value = values[tag]
    gif = Image.open(io.BytesIO(value.image.encoded_image_string))
    frames = np.stack([np.asarray(frame.convert('RGB')) for frame in ImageSequence.Iterator(gif)])
    assert step == 4 and (value.image.height, value.image.width) == (8, 8)
    np.testing.assert_array_equal(frames, videos[i])
  captions = values['samples/captions/text_summary'][1].tensor.string_val[0].decode()
  assert all(prompt in captions for prompt in PROMPTS)


def test_other_processes_write_nothing(tmp_path):
  writer = metrics_lib.MetricWriter(tmp_path, total_steps=10, enabled=False)
  writer.set_config(micro_config())
  writer.write(1, {'loss': 1.0})
  writer.write_samples(1, _videos(), PROMPTS, fps=8)
  writer.close()
  assert not (tmp_path / 'tensorboard').exists()


class FakeWandb(types.ModuleType):
  """Records what the writer asks of wandb."""

  def __init__(self):
    super().__init__('wandb')
    self.inits, self.logs, self.finished = [], [], 0

  def init(self, **kwargs):
    self.inits.append(kwargs)

  def log(self, data, step):
    self.logs.append((step, data))

  def finish(self):
    self.finished += 1

  class Video:
    def __init__(self, data, fps, caption, format):  # pylint: disable=redefined-builtin
      self.data, self.fps, self.caption, self.format = data, fps, caption, format


def test_wandb_gets_the_config_scalars_and_samples_and_a_resume_continues_its_run(tmp_path, monkeypatch):
  wandb = FakeWandb()
  monkeypatch.setitem(sys.modules, 'wandb', wandb)
  config = micro_config(**{'logging.wandb_project': 'lumiere', 'logging.wandb_entity': 'team'})
  assert not list(metrics_lib.config_errors(config))
  writer = metrics_lib.MetricWriter(tmp_path, total_steps=10, enabled=True)
  writer.set_config(config)
  assert not wandb.inits  # nothing before the first scalars
  writer.write(2, {'loss': 0.5})
  writer.write_samples(2, _videos(), PROMPTS, fps=8)
  writer.close()
  (init,) = wandb.inits
  assert (init['project'], init['entity'], init['resume']) == ('lumiere', 'team', 'allow')
  assert init['config']['model.image_size'] == 16 and init['config']['logging.wandb_project'] == 'lumiere'
  assert wandb.logs[0] == (2, {'loss': 0.5})
  step, data = wandb.logs[1]
  assert step == 2 and [video.caption for video in data['samples']] == list(PROMPTS)
  assert data['samples'][0].data.shape == (3, 3, 8, 8)  # wandb.Video's (time, channels, height, width)
  np.testing.assert_array_equal(data['samples'][1].data, _videos()[1].transpose(0, 3, 1, 2))
  assert wandb.finished == 1
  resumed = metrics_lib.MetricWriter(tmp_path, total_steps=10, enabled=True)
  resumed.set_config(config)
  resumed.write(3, {'loss': 0.4})
  resumed.close()
  assert wandb.inits[1]['id'] == init['id']  # the same W&B run


def test_wandb_is_never_imported_when_off(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'wandb', None)  # any `import wandb` now raises ImportError
  writer = metrics_lib.MetricWriter(tmp_path, total_steps=10, enabled=True)
  writer.set_config(micro_config())
  writer.write(1, {'loss': 1.0})
  writer.close()
  assert not (tmp_path / metrics_lib.WANDB_RUN_ID).exists()


def test_missing_wandb_or_project_is_a_config_error(monkeypatch):
  monkeypatch.setitem(sys.modules, 'wandb', None)
  with pytest.raises(config_lib.ConfigError, match=r'logging\.wandb_project.*lumiere_jax\[wandb\]'):
    validation.validate(micro_config(**{'logging.wandb_project': 'lumiere'}), num_devices=1, num_processes=1)
  errors = dict(metrics_lib.config_errors(micro_config(**{'logging.wandb_entity': 'team'})))
  assert 'logging.wandb_project is empty' in errors['logging.wandb_entity']


def test_dry_run_reports_the_missing_wandb_extra(dry_run, monkeypatch, tmp_path):  # noqa: F811
  monkeypatch.setitem(sys.modules, 'wandb', None)
  status, _, err = dry_run('--config', TRAIN_CONFIG, f'--config.model.init_from={tmp_path}',
                           '--config.logging.wandb_project=lumiere')
  assert status == 1 and 'lumiere_jax[wandb]' in err and 'Traceback' not in err, err
