"""Band statistics of a pyramid: the level-0 summaries of its tasks merged, then summarized.

Moments merge exactly (Chan et al.), per-value counts by addition; merged,
they fix the histogram bins (shared by the time slices, so counts add up) and
give the ``bands`` attribute: per band its statistics and histogram, overall
and per time slice (STAC raster extension names).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from .levels import LevelSummary
from .plan import CONVENTION_METHOD, PyramidPlan
from .stats import Bins, Moments, ValueCounts, summarize, unpack_counts


class PyramidStatistics(BaseModel):
    """Partition summaries merged per time slot and band, and the histogram bins per band."""

    model_config = ConfigDict(frozen=True)

    moments: list[list[Moments]]  # [time][band]
    bins: list[Bins | None]  # [band], shared by the time slots so they add up
    values: list[list[ValueCounts]] = []  # [time][band] when level 0 was summarized by per-value counts


def merge_moments(pyramid: PyramidPlan, results: list[LevelSummary]) -> PyramidStatistics:
    """Task results of one pyramid to per-(time, band) moments and per-band bins.

    Reads the results' level-0 summaries (``moments`` or ``values``); any
    other result (histogram counts, levels above 0) is passed over.
    """
    nt, nb = len(pyramid.base.times), len(pyramid.base.bands)
    moments = [[Moments() for _ in range(nb)] for _ in range(nt)]
    values = [[ValueCounts() for _ in range(nb)] for _ in range(nt)]
    for result in results:
        t = result.time_index
        for b, m in enumerate(result.moments or []):
            moments[t][b] = moments[t][b].merge(m)
        for b, v in enumerate(result.values or []):
            values[t][b] = values[t][b].merge(v)
    tallied_values = any(result.values for result in results)
    if tallied_values:
        moments = [[m.merge(v.moments()) for m, v in zip(ms, vs, strict=True)]
                   for ms, vs in zip(moments, values, strict=True)]
    bins = []
    for b in range(nb):
        overall = Moments()
        for t in range(nt):
            overall = overall.merge(moments[t][b])
        bins.append(Bins.covering(overall, pyramid.integer))
    return PyramidStatistics(moments=moments, bins=bins, values=values if tallied_values else [])


def band_statistics(
    pyramid: PyramidPlan, stats: PyramidStatistics, results: list[LevelSummary]
) -> list[dict[str, Any]]:
    """The ``bands`` attribute: per band its statistics and histogram, overall and per time slot."""
    spec = pyramid.base
    nt = len(spec.times)
    counts = [[np.zeros(b.n, dtype=np.int64) if b else None for b in stats.bins] for _ in range(nt)]
    for result in results:
        for b, c in enumerate(result.counts or []):
            if c is not None:
                counts[result.time_index][b] += unpack_counts(c)
    for t, per_band in enumerate(stats.values):
        for b, v in enumerate(per_band):
            band_bins = stats.bins[b]
            if band_bins is not None:
                counts[t][b] += v.histogram(band_bins)
    pixels = spec.grid.width * spec.grid.height
    nodata = "nan" if math.isnan(spec.nodata) else spec.nodata  # JSON has no NaN; STAC writes "nan"
    bands = []
    for b, name in enumerate(spec.bands):
        bins = stats.bins[b]
        overall, total = Moments(), (np.zeros(bins.n, dtype=np.int64) if bins else None)
        slices = []
        for t in range(nt):
            overall = overall.merge(stats.moments[t][b])
            if total is not None:
                slot_counts = counts[t][b]
                assert slot_counts is not None  # a band with bins has counts in every time slot
                total += slot_counts
            slices.append({"time": spec.times[t],
                           **summarize(stats.moments[t][b], bins, counts[t][b], pixels)})
        bands.append({
            "name": name, "data_type": spec.dtype, "nodata": nodata,
            "resampling": CONVENTION_METHOD[pyramid.methods[b]],
            **summarize(overall, bins, total, pixels * nt),
            "time_slices": slices,
        })
    return bands
