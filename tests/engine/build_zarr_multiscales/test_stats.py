"""Streaming band statistics: merged partition summaries equal numpy on the whole band."""

from __future__ import annotations

import numpy as np
import pytest

from rasterflow.engine.build_zarr_multiscales.stats import (
    FINE_BINS,
    Bins,
    Moments,
    ValueCounts,
    band_counts,
    band_moments,
    summarize,
    value_counts,
)


def _partials(band: np.ndarray, nodata: float, parts: int = 5):
    """Moments of horizontal slices of ``band``, merged: what the partitions of a level do."""
    merged = Moments()
    for piece in np.array_split(band, parts):
        merged = merged.merge(band_moments(piece, nodata))
    return merged


@pytest.mark.parametrize("dtype, low, high", [("uint16", 5000, 25000), ("int16", -2000, 2000),
                                              ("uint8", 1, 255), ("float32", -5.0, 3.0),
                                              ("int32", -10**6, 10**6)])
def test_merged_moments_equal_numpy(dtype, low, high):
    rng = np.random.default_rng(3)
    values = rng.uniform(low, high, (400, 300)) if dtype == "float32" else rng.integers(low, high, (400, 300))
    band = values.astype(dtype)
    band[rng.random(band.shape) < 0.1] = 0
    valid = band[band != 0]
    m = _partials(band, 0.0)
    assert m.count == valid.size
    assert (m.minimum, m.maximum) == (valid.min(), valid.max())
    assert m.mean == pytest.approx(valid.astype(np.float64).mean(), rel=1e-12)
    assert m.stddev == pytest.approx(valid.astype(np.float64).std(), rel=1e-9)


def test_integer_path_excludes_nodata_and_maps_signed_values():
    band = np.array([[-32768, -1, 0, 32767], [-9999, -9999, 5, 5]], dtype=np.int16)
    counts, offset = value_counts(band, -9999.0)
    assert offset == -32768 and counts.sum() == 6
    assert counts[-1 - offset] == 1 and counts[5 - offset] == 2 and counts[-9999 - offset] == 0
    assert value_counts(band.astype(np.float32), -9999.0) is None
    assert value_counts(band.astype(np.int32), -9999.0) is None


def test_exact_bins_give_numpy_percentiles_and_sum_to_the_count():
    rng = np.random.default_rng(5)
    band = rng.integers(100, 3000, (300, 500)).astype(np.uint16)  # 2900 values: one bin each
    band[:20] = 0
    valid = band[band != 0]
    bins = Bins.covering(_partials(band, 0.0), integer=True)
    assert bins.exact and bins.n == int(valid.max() - valid.min()) + 1
    counts = sum(band_counts(piece, 0.0, bins) for piece in np.array_split(band, 4))
    assert counts.sum() == valid.size
    for p in (2, 98, 50):
        assert bins.percentile(counts, p) == np.percentile(valid, p, method="inverted_cdf")


def test_wide_ranges_and_floats_are_within_one_bin():
    rng = np.random.default_rng(6)
    for band, integer in [(rng.integers(0, 60000, (300, 300)).astype(np.uint16), True),
                          (rng.normal(0.3, 0.1, (300, 300)).astype(np.float32), False)]:
        valid = band.ravel()
        bins = Bins.covering(Moments.of(valid), integer=integer)
        assert not bins.exact and bins.n == FINE_BINS
        counts = band_counts(band, -1.0, bins)
        assert counts.sum() == valid.size
        for p in (2, 98):
            assert abs(bins.percentile(counts, p) - np.percentile(valid, p)) <= bins.width


def test_summary_is_stac_shaped_and_buckets_sum_to_the_count():
    band = np.arange(1, 1001, dtype=np.uint16).reshape(20, 50)
    m = Moments.of(band)
    bins = Bins.covering(m, integer=True)
    s = summarize(m, bins, bins.count(band), pixels=2000)
    stats, hist = s["statistics"], s["histogram"]
    assert stats["valid_percent"] == 50.0 and stats["count"] == 1000
    assert (stats["minimum"], stats["maximum"], stats["mean"]) == (1.0, 1000.0, 500.5)
    assert (stats["percentile_2"], stats["percentile_98"]) == (20.0, 980.0)
    assert hist["count"] == 256 and len(hist["buckets"]) == 256 and sum(hist["buckets"]) == 1000
    assert (hist["min"], hist["max"]) == (0.5, 1000.5)
    empty = summarize(Moments(), None, None, pixels=10)
    assert empty["statistics"]["count"] == 0 and empty["histogram"] is None


@pytest.mark.parametrize("dtype, low, high", [("uint16", 5000, 25000), ("int16", -2000, 2000)])
def test_value_counts_of_partitions_merge_into_the_whole_bands_summary(dtype, low, high):
    rng = np.random.default_rng(8)
    band = rng.integers(low, high, (300, 200)).astype(dtype)
    band[rng.random(band.shape) < 0.1] = -1 if dtype == "int16" else 0
    nodata = -1.0 if dtype == "int16" else 0.0
    merged = ValueCounts()
    for piece in np.array_split(band, 5):
        wire = ValueCounts.of(piece, nodata).model_dump_json()
        merged = merged.merge(ValueCounts.model_validate_json(wire))
    whole = band_moments(band, nodata)
    assert merged.moments() == whole and merged.total == whole.count
    bins = Bins.covering(whole, integer=True)
    np.testing.assert_array_equal(merged.histogram(bins), band_counts(band, nodata, bins))
