"""The global patch grid and the merge weights (engine/patches.py): pure arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from rasterflow.engine.predict_mosaic.patches import AxisTiling, block_tiling, patch_origins
from rasterflow.enums import MergeModeEnum

CLIP, WEIGHTED = MergeModeEnum.CLIP, MergeModeEnum.WEIGHTED_AVERAGE


def test_origins_are_regular_then_flush_with_the_far_edge():
    assert patch_origins(100, 32, 24).tolist() == [0, 24, 48, 68]
    assert patch_origins(104, 32, 24).tolist() == [0, 24, 48, 72]  # the regular grid reaches the edge
    assert patch_origins(20, 32, 24).tolist() == [0]  # shorter than a patch: one (padded) patch


@pytest.mark.parametrize("n", [20, 32, 100, 257, 1001])
@pytest.mark.parametrize("patch,clip", [(32, 4), (64, 0), (16, 7)])
def test_clip_regions_partition_the_axis_inside_patch_centres(n, patch, clip):
    axis = AxisTiling(n, patch, clip, CLIP)
    start, end, o = axis.start, axis.end, axis.origins
    assert start[0] == 0 and end[-1] == n
    assert (start[1:] == end[:-1]).all() and (end > start).all()
    edge = (o + patch >= n)
    # Every owned pixel is at least clip from its patch's edges, except on the image-edge side.
    assert ((start - o >= clip) | (o == 0)).all()
    assert ((o + patch - end >= clip) | edge).all()


@pytest.mark.parametrize("n", [20, 100, 257, 1001])
@pytest.mark.parametrize("patch,clip", [(32, 4), (64, 0), (16, 7)])
def test_weights_cover_every_pixel_and_vanish_in_the_clipped_margins(n, patch, clip):
    axis = AxisTiling(n, patch, clip, WEIGHTED)
    total = np.zeros(max(n, patch))
    for i, o in enumerate(axis.origins):
        w = axis.weights(i)
        if o > 0:
            assert (w[:clip] == 0).all()
        if o + patch < n:
            assert (w[patch - clip:] == 0).all()
        positive = np.flatnonzero(w > 0) + o
        assert positive.min() >= axis.start[i] and positive.max() < max(axis.end[i], o + patch)
        total[o : o + patch] += w
    assert (total[:n] > 0).all()


def test_hann_weights_sum_to_one_away_from_the_edges():
    axis = AxisTiling(1000, 40, 4, WEIGHTED)  # centre 32, hop 16
    total = np.zeros(1000)
    for i, o in enumerate(axis.origins):
        total[o : o + 40] += axis.weights(i)
    np.testing.assert_allclose(total[40:900], 1.0, atol=1e-6)


@pytest.mark.parametrize("mode", [CLIP, WEIGHTED])
def test_a_block_reads_only_what_its_patches_need(mode):
    rows, cols = AxisTiling(801, 64, 4, mode), AxisTiling(1001, 64, 4, mode)
    tiling = block_tiling(rows, cols, (128, 256, 512, 640))
    r0, r1, c0, c1 = tiling.read
    assert r0 <= 128 - 4 and r1 >= 256 + 4 and c0 <= 512 - 4 and c1 >= 640 + 4  # the halo
    assert r1 - r0 <= 128 + 2 * 64 and c1 - c0 <= 128 + 2 * 64
    # Every pixel of the block has a contributing patch among the selected ones.
    assert rows.start[tiling.rows].min() <= 128 and rows.end[tiling.rows].max() >= 256


TUKEY = MergeModeEnum.TUKEY


@pytest.mark.parametrize("n", [1, 20, 64, 255, 256, 1001])
@pytest.mark.parametrize("patch,clip", [(256, 51), (64, 12), (32, 1), (16, 7)])
def test_tukey_weights_are_a_partition_of_unity_over_the_image(n, patch, clip):
    axis = AxisTiling(n, patch, clip, TUKEY)
    total = np.zeros(n)
    for i, o in enumerate(axis.origins):
        w = axis.weights(i).astype(np.float64)
        lo, hi = max(o, 0), min(o + patch, n)
        total[lo:hi] += w[lo - o : hi - o]
        positive = np.flatnonzero(w[lo - o : hi - o] > 0) + lo
        assert positive.min() >= axis.start[i] and positive.max() < axis.end[i]
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_tukey_is_ukis_csmasks_tiling():
    """Origins and window of ukis_csmask.utils.tile_array/untile_array (overlap 0.2, smooth blending)."""
    from scipy.signal.windows import tukey

    patch, overlap, n = 256, 0.2, 768
    pad, step = int(patch * overlap), int(patch - patch * overlap)
    # tile_array pads pad before and patch + 1 + pad after, then takes every tile that fits.
    reference = [k * step - pad for k in range((n + 2 * pad + patch + 1 - patch) // step + 1)]
    axis = AxisTiling(n, patch, pad, TUKEY)
    weighing = [o for o in reference if o < n - 1]  # the others weigh no image pixel
    assert axis.origins.tolist() == weighing
    np.testing.assert_allclose(axis.weights(0), tukey(patch, alpha=overlap * 2), atol=1e-7)


def test_mirror_index_is_numpys_symmetric_padding():
    from rasterflow.engine.predict_mosaic.patches import mirror_index

    for n in (1, 2, 7):
        padded = np.pad(np.arange(n), 3 * n, mode="symmetric")
        assert mirror_index(np.arange(-3 * n, 4 * n), n).tolist() == padded.tolist()
