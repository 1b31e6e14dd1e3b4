"""Band statistics streamed over partitions: moments, extremes, histogram, percentiles.

A viewer needs colour limits per band before it reads any pixels, so the
multiscales workflow stores them; computing them must not hold a whole band in
memory. Each partition reduces its valid pixels to a small summary that merges
exactly with others:

1. ``Moments`` (count, mean, M2, min, max), merged with Chan et al.'s pairwise
   update (numerically stable, unlike summing squares).
2. Once min and max are known, ``Bins`` fixes a histogram; partitions count into
   it and counts add up. Integers spanning at most ``FINE_BINS`` values get one
   bin per value, so percentiles are exact (numpy's ``inverted_cdf``); wider
   ranges and floats get ``FINE_BINS`` equal bins and percentiles interpolated
   within a bin (error below one bin width, ``(max - min) / FINE_BINS``).

Integers of 8 and 16 bits take a faster road to the same numbers: one
``bincount`` of the raw values (``value_counts``, nodata dropped afterwards)
gives exact moments and folds into the bins, without masks or float copies.
Their per-value counts (``ValueCounts``) are themselves a summary that merges
exactly, so one pass over the pixels gives moments and histogram alike: no
second read once the bins are known.

The stored histogram has at most ``HISTOGRAM_BUCKETS`` buckets (STAC raster
extension's ``histogram``: count, min, max, buckets), merged from the fine bins.
Every valid pixel falls in exactly one bucket, so bucket counts sum to the
valid pixel count.
"""

from __future__ import annotations

import base64
import math
import zlib
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from .downsample import valid_mask

FINE_BINS = 4096
HISTOGRAM_BUCKETS = 256
PERCENTILES = (2, 98)
_STRIP = 1 << 20


class Moments(BaseModel):
    """Summary of some valid values; ``count == 0`` means none."""

    model_config = ConfigDict(frozen=True)

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    minimum: float | None = None
    maximum: float | None = None

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """``values``: the valid values, any shape."""
        if values.size == 0:
            return cls()
        x = values.astype(np.float64).ravel()
        mean = float(x.mean())
        d = x - mean
        return cls(count=int(x.size), mean=mean, m2=float(d @ d),
                   minimum=float(values.min()), maximum=float(values.max()))

    @classmethod
    def from_counts(cls, counts: np.ndarray, offset: int) -> Moments:
        """Exact moments of values ``offset + i`` occurring ``counts[i]`` times."""
        present = np.flatnonzero(counts)
        if present.size == 0:
            return cls()
        counts = counts[present[0] : present[-1] + 1]
        values = np.arange(present[0], present[-1] + 1, dtype=np.float64) + offset
        n = int(counts.sum())
        mean = float(counts @ values) / n
        d = values - mean
        return cls(count=n, mean=mean, m2=float(counts @ (d * d)),
                   minimum=float(offset + present[0]), maximum=float(offset + present[-1]))

    def merge(self, other: Moments) -> Moments:
        if not other.count:
            return self
        if not self.count:
            return other
        assert self.minimum is not None and self.maximum is not None  # set whenever count > 0
        assert other.minimum is not None and other.maximum is not None
        n = self.count + other.count
        delta = other.mean - self.mean
        return Moments(
            count=n,
            mean=self.mean + delta * other.count / n,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / n,
            minimum=min(self.minimum, other.minimum),
            maximum=max(self.maximum, other.maximum),
        )

    @property
    def stddev(self) -> float:
        """Population standard deviation (GDAL's and STAC's)."""
        return math.sqrt(self.m2 / self.count) if self.count else math.nan


class Bins(BaseModel):
    """Equal-width histogram bins over [lo, hi); ``exact``: one integer value per bin."""

    model_config = ConfigDict(frozen=True)

    lo: float
    hi: float
    n: int
    exact: bool

    @classmethod
    def covering(cls, moments: Moments, integer: bool) -> Bins | None:
        """Bins for the values ``moments`` summarize; None when there are none."""
        if not moments.count:
            return None
        lo, hi = moments.minimum, moments.maximum
        assert lo is not None and hi is not None  # set whenever count > 0
        if integer:
            span = int(hi - lo) + 1
            # Integer edges at half values, as GDAL's histograms of integer bands.
            return cls(lo=lo - 0.5, hi=hi + 0.5, n=min(span, FINE_BINS), exact=span <= FINE_BINS)
        if hi == lo:
            return cls(lo=lo, hi=lo + 1.0, n=1, exact=False)
        return cls(lo=lo, hi=hi, n=FINE_BINS, exact=False)

    @property
    def width(self) -> float:
        return (self.hi - self.lo) / self.n

    def _index(self, values: np.ndarray) -> np.ndarray:
        """The bin of each of ``values`` (valid values, within [lo, hi])."""
        if self.exact:
            return values.ravel().astype(np.int64) - int(self.lo + 0.5)
        scale = self.n / (self.hi - self.lo)
        index = ((values.ravel().astype(np.float64) - self.lo) * scale).astype(np.int64)
        return np.clip(index, 0, self.n - 1, out=index)  # the maximum sits on the closed upper edge

    def count(self, values: np.ndarray) -> np.ndarray:
        """Counts of ``values`` (valid values, within [lo, hi]) per bin."""
        return np.bincount(self._index(values), minlength=self.n)

    def fold(self, counts: np.ndarray, offset: int) -> np.ndarray:
        """Per-bin counts from per-value counts (``value_counts``), values within [lo, hi]."""
        present = np.flatnonzero(counts)
        index = self._index(present + offset)
        return np.bincount(index, weights=counts[present], minlength=self.n).astype(np.int64)

    def percentile(self, counts: np.ndarray, p: float) -> float:
        """The ``p``-th percentile (0-100) of the values counted in ``counts``."""
        cumulative = np.cumsum(counts)
        total = int(cumulative[-1])
        # First bin whose cumulative count reaches p% (exact integer comparison).
        k = int(np.searchsorted(cumulative * 100, p * total, side="left"))
        k = min(k, self.n - 1)
        if self.exact:
            return self.lo + 0.5 + k
        before = int(cumulative[k - 1]) if k else 0
        fraction = (p * total / 100 - before) / counts[k] if counts[k] else 0.0
        return self.lo + (k + fraction) * self.width

    def buckets(self, counts: np.ndarray) -> dict[str, Any]:
        """The stored histogram: at most HISTOGRAM_BUCKETS buckets over [lo, hi]."""
        n = min(self.n, HISTOGRAM_BUCKETS)
        # Each fine bin lies within one bucket (bins are whole values, or 16 per bucket).
        bucket = ((np.arange(self.n) + 0.5) * n / self.n).astype(np.int64)
        merged = np.bincount(bucket, weights=counts, minlength=n).astype(np.int64)
        return {"count": n, "min": self.lo, "max": self.hi, "buckets": [int(c) for c in merged]}


def value_counts(band: np.ndarray, nodata: float) -> tuple[np.ndarray, int] | None:
    """(counts, offset): how often each value ``offset + i`` occurs, nodata excluded.

    Only for integers of at most 16 bits (65536 counters); None otherwise.
    Signed values are mapped to unsigned ones by flipping the sign bit, which
    keeps their order, so ``bincount`` sees non-negative numbers without a copy
    to a wider type.
    """
    dtype = band.dtype
    if not np.issubdtype(dtype, np.integer) or dtype.itemsize > 2:
        return None
    bits = 8 * dtype.itemsize
    if np.issubdtype(dtype, np.signedinteger):
        unsigned = np.dtype(f"u{dtype.itemsize}")
        flat, offset = band.ravel().view(unsigned) ^ unsigned.type(1 << (bits - 1)), -(1 << (bits - 1))
    else:
        flat, offset = band.ravel(), 0
    counts = np.zeros(1 << bits, dtype=np.int64)
    for start in range(0, flat.size, _STRIP):  # bincount casts to intp: strips keep that copy in cache
        counts += np.bincount(flat[start : start + _STRIP], minlength=1 << bits)
    if not math.isnan(nodata) and 0 <= nodata - offset < counts.size:
        counts[int(nodata) - offset] = 0
    return counts, offset


def pack_counts(counts: np.ndarray) -> str:
    """Counts as compact text (zlib, base64) for task results and parameters.

    Prefect walks every element of a list passed to a task: tens of thousands
    of counts cost it about a second; one string costs it nothing.
    """
    raw = np.ascontiguousarray(counts, dtype="<i8").tobytes()
    return base64.b64encode(zlib.compress(raw, 1)).decode("ascii")


def unpack_counts(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<i8").astype(np.int64)


class ValueCounts(BaseModel):
    """How often each value ``offset + i`` occurs (8- and 16-bit integers).

    A partition's exact summary of a band: it merges by addition, and gives
    both the moments and, once the bins are fixed, the histogram. Stored
    trimmed to the values present and packed (``pack_counts``), so a task
    result stays small.
    """

    model_config = ConfigDict(frozen=True)

    offset: int = 0
    counts: str = ""  # pack_counts of the count of each value from offset on; "" for none

    @classmethod
    def of(cls, band: np.ndarray, nodata: float) -> ValueCounts:
        tally = value_counts(band, nodata)
        if tally is None:
            raise ValueError(f"per-value counts need integers of at most 16 bits, not {band.dtype}")
        return cls.trimmed(*tally)

    @classmethod
    def trimmed(cls, counts: np.ndarray, offset: int) -> ValueCounts:
        present = np.flatnonzero(counts)
        if present.size == 0:
            return cls()
        return cls(offset=offset + int(present[0]), counts=pack_counts(counts[present[0] : present[-1] + 1]))

    def array(self) -> np.ndarray:
        return unpack_counts(self.counts) if self.counts else np.zeros(0, dtype=np.int64)

    def merge(self, other: ValueCounts) -> ValueCounts:
        if not other.counts:
            return self
        if not self.counts:
            return other
        mine, theirs = self.array(), other.array()
        lo = min(self.offset, other.offset)
        hi = max(self.offset + mine.size, other.offset + theirs.size)
        total = np.zeros(hi - lo, dtype=np.int64)
        for offset, counts in ((self.offset, mine), (other.offset, theirs)):
            total[offset - lo : offset - lo + counts.size] += counts
        return ValueCounts(offset=lo, counts=pack_counts(total))

    @property
    def total(self) -> int:
        return int(self.array().sum())

    def moments(self) -> Moments:
        return Moments.from_counts(self.array(), self.offset) if self.counts else Moments()

    def histogram(self, bins: Bins) -> np.ndarray:
        return bins.fold(self.array(), self.offset) if self.counts else np.zeros(bins.n, dtype=np.int64)


def band_moments(band: np.ndarray, nodata: float) -> Moments:
    """Moments of one band's valid pixels."""
    tally = value_counts(band, nodata)
    return Moments.from_counts(*tally) if tally else Moments.of(band[valid_mask(band, nodata)])


def band_counts(band: np.ndarray, nodata: float, bins: Bins) -> np.ndarray:
    """Histogram counts of one band's valid pixels in ``bins``."""
    tally = value_counts(band, nodata)
    return bins.fold(*tally) if tally else bins.count(band[valid_mask(band, nodata)])


def summarize(moments: Moments, bins: Bins | None, counts: np.ndarray | None, pixels: int) -> dict[str, Any]:
    """STAC-style ``statistics`` and ``histogram`` of one band (and time slice).

    ``pixels`` is the number of pixels looked at, valid or not (``valid_percent``).
    """
    stats: dict[str, Any] = {
        "count": moments.count,
        "valid_percent": round(100.0 * moments.count / pixels, 4) if pixels else 0.0,
    }
    if not moments.count or bins is None or counts is None:
        return {"statistics": stats, "histogram": None}
    assert moments.minimum is not None and moments.maximum is not None  # set whenever count > 0
    stats |= {
        "minimum": moments.minimum,
        "maximum": moments.maximum,
        "mean": moments.mean,
        "stddev": moments.stddev,
    }
    for p in PERCENTILES:
        value = bins.percentile(counts, p)
        stats[f"percentile_{p}"] = float(min(max(value, moments.minimum), moments.maximum))
    return {"statistics": stats, "histogram": bins.buckets(counts)}
