"""`train.profile_steps`: a jax.profiler trace of the chosen steps in the TensorBoard directory; bad values refused."""

import jax
import pytest

from lumiere_jax import config as config_lib, validation
from lumiere_jax.train import main as train_main, profile
from micro import micro_config


def test_a_profiled_run_writes_a_trace_of_its_steps_into_tensorboard(tmp_path, monkeypatch):
  decisions = []  # (start or stop, the state's step then)
  for name in ('starts_before', 'ends_after'):

    def recording(self, step, method=getattr(profile.StepTrace, name), name=name):
      answer = method(self, step)
      if answer:
        decisions.append((name, step))
      return answer

    monkeypatch.setattr(profile.StepTrace, name, recording)
  config = micro_config(data_dir=tmp_path / 'data', **{'train.profile_steps': '1,3'})
  train_main.train(config, tmp_path / 'run', devices=jax.devices()[:1], until_step=3)  # no final samples
  traces = list((tmp_path / 'run' / 'tensorboard' / 'plugins' / 'profile').glob('*/*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
  assert decisions == [('starts_before', 1), ('ends_after', 3)]  # steps 1..2 (state 1 -> 3) traced


@pytest.mark.parametrize('value, problem', [
    ('3', "is not 'a,b'"), ('a,b', "is not 'a,b'"), ('1,2,3', "is not 'a,b'"), ('3,3', '0 <= a < b'),
    ('-1,2', '0 <= a < b'), ('2,5', 'b=5 is past train.steps=4')])
def test_bad_profile_steps_are_refused_naming_the_field(value, problem):
  config = micro_config(**{'train.steps': 4, 'train.profile_steps': value})
  with pytest.raises(config_lib.ConfigError, match=r'train\.profile_steps') as error:
    validation.validate(config, num_devices=1)
  assert problem in str(error.value)


def test_empty_profile_steps_trace_nothing():
  assert not profile.StepTrace(micro_config().train, '/nonexistent', enabled=True).enabled
