"""Training: frozen spatial weights, 1-vs-8-device equivalence, sharding rules, bit-exact resume, t2i -> base."""

import jax
import numpy as np
import pytest

from lumiere_jax.data import tokenizers
from lumiere_jax.models import params as params_lib
from lumiere_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import main as train_main, metrics as metrics_lib, state as state_lib, step as step_lib
from micro import micro_config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('data')


def _batch(config, seed=0):
  rng = np.random.default_rng(seed)
  b, s, t = config.train.batch_size, config.model.image_size, config.model.num_frames
  captions = ['a red circle moving left', 'a blue square'] * (b // 2)
  tokens, mask = tokenizers.build_tokenizer(config.text).encode(captions)
  return dict(video=rng.integers(0, 256, (b, t, s, s, 3), np.uint8), tokens=tokens, token_mask=mask)


def _train(config, workdir, **kwargs):
  return train_main.train(config, workdir, devices=jax.devices()[:1], **kwargs)


def _tree_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_temporal_training_leaves_spatial_weights_bit_identical(data_dir):
  config = micro_config(data_dir=data_dir)
  setup = state_lib.TrainSetup.create(config, mesh_lib.make_mesh(config.mesh, jax.devices()[:1]))
  assert setup.trainable and all('temporal' in k for k in setup.trainable)
  assert any(k.startswith('unet.') for k in setup.frozen) and any(k.startswith('text_encoder.') for k in setup.frozen)
  state = setup.init()
  before = jax.device_get(state)
  step = step_lib.jit_train_step(setup)
  for i in range(3):
    state, metrics = step(state, sharding_lib.global_batch(_batch(config, i), setup.mesh))
  after = jax.device_get(state)
  assert np.isfinite(float(metrics['loss']))
  assert _tree_equal(before['frozen'], after['frozen'])
  changed = [k for k in setup.trainable if not np.array_equal(before['params'][k], after['params'][k])]
  assert len(changed) == len(setup.trainable)
  # Norms per group, computed in the step, against NumPy float64 on the state: spatial and text are frozen (no
  # update), the temporal update is the last step's change of the trainable parameters.
  norm = lambda arrays: np.sqrt(sum(np.sum(np.asarray(a, np.float64) ** 2) for a in arrays))  # noqa: E731
  spatial = [v for k, v in after['frozen'].items() if k.startswith('unet.')]
  np.testing.assert_allclose(float(metrics['param_norm/spatial']), norm(spatial), rtol=1e-5)
  np.testing.assert_allclose(float(metrics['param_norm/temporal']), norm(after['params'].values()), rtol=1e-5)
  assert 'param_norm/text' in metrics and set(k for k in metrics if k.startswith('update_norm')) == {
      'update_norm/temporal'} and float(metrics['update_norm/temporal']) > 0


def test_one_device_and_eight_devices_agree(data_dir):
  config = micro_config(data_dir=data_dir, **{'mesh.data': 2, 'mesh.fsdp': 4, 'train.batch_size': 8})
  batch = _batch(config)
  results = {}
  for name, devices in (('one', jax.devices()[:1]), ('eight', jax.devices()[:8])):
    mesh = mesh_lib.make_mesh(dict(data=-1, fsdp=len(devices) // 2 or 1, tensor=1) if len(devices) > 1
                              else dict(data=1, fsdp=1, tensor=1), devices)
    setup = state_lib.TrainSetup.create(config, mesh)
    state = setup.init()
    grad_fn = jax.jit(jax.value_and_grad(
        lambda p, f, b, r: step_lib.loss_and_metrics(setup, p, f, b, r)[0]))
    loss, grads = grad_fn(state['params'], state['frozen'], sharding_lib.global_batch(batch, mesh),
                          jax.random.PRNGKey(3))
    results[name] = (float(loss), jax.device_get(grads), state, setup)
  assert results['one'][0] == pytest.approx(results['eight'][0], rel=1e-5)
  for key, g in results['one'][1].items():
    np.testing.assert_allclose(results['eight'][1][key], g, rtol=2e-4, atol=2e-6, err_msg=key)
  # Parameters are born with the shardings the logical rules give on the 2x4 mesh.
  state, setup = results['eight'][2], results['eight'][3]
  rules = sharding_lib.rules_from_config(config.mesh.axis_rules)
  for key, value in {**state['params'], **state['frozen']}.items():
    want = sharding_lib.logical_to_spec(setup.spec.logical_names[key], value.shape, setup.mesh, rules)
    assert value.sharding.spec == want, key
  report = sharding_lib.replication_report(setup.spec.shapes, setup.param_shardings)
  assert report['replicated_fraction'] < 0.1, report  # kernels split over fsdp; only small 1-D leaves replicated


def test_resume_is_bit_exact(data_dir, tmp_path):
  config = micro_config(data_dir=data_dir, **{'train.steps': 4, 'train.checkpoint_every': 2})
  straight = _train(config, tmp_path / 'straight')
  _train(config, tmp_path / 'resumed', until_step=2)
  resumed = _train(config, tmp_path / 'resumed')
  a, b = jax.device_get(straight.state), jax.device_get(resumed.state)
  assert int(a['step']) == int(b['step']) == 4
  for part in ('params', 'frozen', 'ema', 'opt_state', 'rng'):
    assert _tree_equal(a[part], b[part]), part
  next_a, next_b = next(straight.data_iterator), next(resumed.data_iterator)
  assert all(np.array_equal(next_a[k], next_b[k]) for k in next_a)


def test_base_initialises_spatial_weights_from_t2i(data_dir, tmp_path):
  t2i = _train(micro_config('t2i', data_dir=data_dir, **{'train.steps': 2}), tmp_path / 't2i')
  t2i_params = state_lib.inference_params(jax.device_get(t2i.state))
  config = micro_config(data_dir=data_dir, **{'model.init_from': str(tmp_path / 't2i'), 'train.steps': 2})
  base = jax.device_get(_train(config, tmp_path / 'base').state)
  assert set(base['frozen']) == set(t2i_params)
  assert all(np.array_equal(base['frozen'][k], t2i_params[k]) for k in base['frozen'])
  # Only temporal paths train; the t2i run had none.
  trainable, _ = params_lib.select(base['params'], 'temporal')
  assert trainable == sorted(base['params'])
  assert (tmp_path / 'base' / 'samples').is_dir()


def test_init_from_a_mismatched_checkpoint_names_the_problem(data_dir, tmp_path):
  _train(micro_config('t2i', data_dir=data_dir, **{'train.steps': 1, 'model.channels': 8}),
                   tmp_path / 't2i')
  config = micro_config(data_dir=data_dir, **{'model.init_from': str(tmp_path / 't2i')})
  with pytest.raises(ValueError, match='init_from'):
    _train(config, tmp_path / 'base')


def test_precomputed_text_embeddings_give_the_encoders_loss(data_dir):
  config = micro_config(data_dir=data_dir)
  setup = state_lib.TrainSetup.create(config, mesh_lib.make_mesh(config.mesh, jax.devices()[:1]))
  state = setup.init()
  # Zero-initialised output projections make a fresh model ignore the caption: perturb every weight first.
  params, frozen = jax.tree.map(lambda p: p + 0.05 * np.random.default_rng(p.size).standard_normal(p.shape),
                                (state['params'], state['frozen']))
  batch = _batch(config)
  model = setup.spec.merge({**params, **frozen})
  precomputed = dict(video=batch['video'], token_mask=batch['token_mask'],
                     text_emb=np.asarray(model.encode_text(batch['tokens'], batch['token_mask'])))
  loss = jax.jit(lambda b: step_lib.loss_and_metrics(setup, params, frozen, b, jax.random.PRNGKey(5))[0])
  assert float(loss(precomputed)) == pytest.approx(float(loss(batch)), rel=1e-6)
  precomputed['text_emb'] = precomputed['text_emb'][::-1]  # other captions' embeddings: another loss
  assert float(loss(precomputed)) != pytest.approx(float(loss(batch)), rel=1e-4)


def test_eta_comes_from_the_step_rate_alone(tmp_path, monkeypatch, capsys):
  # 100 s of set-up before the clock starts, 10 steps of 1 s, and a 30 s checkpoint save: 90 steps left at 1 s each.
  now = [1000.0]
  monkeypatch.setattr(metrics_lib.time, 'monotonic', lambda: now[0])
  writer = metrics_lib.MetricWriter(tmp_path, total_steps=100, enabled=True)
  now[0] += 100
  writer.start_clock(0)
  now[0] += 5
  with writer.paused():
    now[0] += 30
  now[0] += 5
  writer.write(10, {'loss': 1.0})
  assert writer.eta_s(10) == pytest.approx(90.0)
  assert 'eta    90s' in capsys.readouterr().out
  writer.close()


def test_the_resolved_config_is_printed_and_written_to_tensorboard(tmp_path, capsys):
  writer = metrics_lib.MetricWriter(tmp_path, total_steps=10, enabled=True)
  writer.set_config(micro_config())
  assert 'model.image_size = 16' in capsys.readouterr().out
  assert not (tmp_path / 'tensorboard').exists()  # nothing is written before the first scalars
  writer.write(1, {'loss': 1.0})
  writer.close()
  events = b''.join(path.read_bytes() for path in (tmp_path / 'tensorboard').iterdir())
  assert b'model.image_size = 16' in events and b'config' in events
