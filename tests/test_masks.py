"""Conditioning masks: each kind's documented convention, checked on its arrays."""

import numpy as np
import pytest

from lumiere_jax.data import masks

T, H, W = 8, 24, 32


def _video(seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (T, H, W, 3)).astype(np.float32)


def _condition(kind, seed):
  video = _video(seed)
  target, masked, mask = masks.condition(video, kind, np.random.default_rng(seed))
  assert mask.shape == (T, H, W, 1) and mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
  np.testing.assert_array_equal(masked, target * mask)  # given pixels are the target's, free ones are 0
  return video, target, masked, mask[..., 0]


def _is_box(region):
  rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
  return region.sum() == len(rows) * len(cols) and np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1


def test_image_to_video_gives_the_first_frame_only():
  video, target, masked, mask = _condition('i2v', 0)
  assert (mask[0] == 1).all() and (mask[1:] == 0).all()
  np.testing.assert_array_equal(target, video)
  np.testing.assert_array_equal(masked[0], video[0])


def test_unconditional_gives_nothing():
  video, target, masked, mask = _condition('unconditional', 0)
  assert not mask.any() and not masked.any()
  np.testing.assert_array_equal(target, video)


@pytest.mark.parametrize('seed', range(12))
def test_inpainting_boxes_static_or_moving(seed):
  video, target, _, mask = _condition('inpaint_box', seed)
  free = mask == 0
  np.testing.assert_array_equal(target, video)
  assert all(_is_box(free[t]) for t in range(T) if free[t].any()) and free[0].any()
  assert (mask == 1).any()  # something is given


def test_inpainting_covers_static_and_moving_regions_for_both_shapes():
  for kind in ('inpaint_box', 'inpaint_stroke'):
    moving = []
    for seed in range(20):
      free = _condition(kind, seed)[3] == 0
      assert free.any() and not free.all()
      moving.append(not all(np.array_equal(free[0], free[t]) for t in range(T)))
    assert 3 <= sum(moving) <= 17, kind  # about half static, half moving


def test_moving_region_keeps_its_shape_and_moves_in_a_line():
  region = np.zeros((H, W), bool)
  region[8:14, 10:16] = True
  path = masks._moving(region, T, np.random.default_rng(3))
  centres = np.array([np.argwhere(frame).mean(0) for frame in path])
  steps = np.diff(centres, axis=0)
  assert np.abs(steps - steps.mean(0)).max() <= 1.0  # constant velocity up to pixel rounding
  assert np.abs(centres[-1] - centres[0]).max() > 0


def test_strokes_are_free_form():
  shapes = [_condition('inpaint_stroke', seed)[3][0] == 0 for seed in range(10)]
  assert sum(not _is_box(free) for free in shapes if free.any()) >= 8


@pytest.mark.parametrize('seed', range(6))
def test_cinemagraph_freezes_all_but_the_region(seed):
  video, target, masked, mask = _condition('cinemagraph', seed)
  assert mask[0].all()  # the image itself is frame 0
  assert all(np.array_equal(mask[1], mask[t]) for t in range(1, T))  # then the same region in every frame
  free = mask[1] == 0
  assert _is_box(free) and free.any() and not free.all()
  np.testing.assert_array_equal(target[:, ~free], np.broadcast_to(video[0, ~free], target[:, ~free].shape))
  np.testing.assert_array_equal(target[:, free], video[:, free])
  np.testing.assert_array_equal(masked[:, ~free], target[:, ~free])


def test_pick_kind_follows_the_weights():
  weights = {'i2v': 3.0, 'inpaint_box': 1.0, 'unconditional': 0.0}
  rng = np.random.default_rng(0)
  draws = [masks.pick_kind(weights, rng) for _ in range(4000)]
  assert draws.count('unconditional') == 0
  assert draws.count('i2v') / 4000 == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize('weights', [{}, {'i2v': 0.0}, {'i2v': -1.0, 'inpaint_box': 2.0}, {'outpaint': 1.0}])
def test_bad_weights_and_kinds_are_refused(weights):
  with pytest.raises(ValueError, match='mask weights'):
    masks.pick_kind(weights, np.random.default_rng(0))
  with pytest.raises(ValueError, match='mask kind'):
    masks.condition(_video(), 'outpaint', np.random.default_rng(0))
