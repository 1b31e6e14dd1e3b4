"""The order pyramids are built in: one list of stages, walked by the flow and by ``build_pyramids``.

A stage is work that may run side by side; stages run one after the other.

1. Level 0 (unless level 1 copies it), with level 1 beside it where level 1
   needs neither level 0's copy nor its bins (it reads the input itself).
2. Pyramids whose histograms need bins merge level 0's moments into them.
3. Level 1 of the other pyramids, counting level 0 into the bins.
4. Pyramids of one level that level 0 did not summarize whole: a count pass.
5. Every further level of several partitions, each from the one before.
6. The last levels, of one partition each, as chains (one read each).

Then each pyramid's statistics are merged and it is committed. The flow runs
each piece of work as a Prefect task (retries, cache); ``build_pyramids`` with
a plain ``map`` (or a thread pool's), so both build exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

from .. import uris
from .levels import LevelSummary, build_level_chain, build_level_shard, count_level_shard
from .plan import LevelChain, LevelJob, PyramidPlan
from .pyramid import commit_pyramid, create_pyramid
from .statistics import band_statistics, merge_moments
from .stats import Bins


class Work(NamedTuple):
    """One task's worth: a level partition (``shard``), a count pass (``count``) or a chain."""

    pyramid: PyramidPlan
    kind: Literal["shard", "count", "chain"]
    job: LevelJob | LevelChain
    with_bins: bool = False  # give it its pyramid's bins (level 1 and count passes count into them)


class Stage(NamedTuple):
    label: str  # for progress reports
    work: list[Work]
    bins_after: list[PyramidPlan] = []  # merge these pyramids' level-0 moments into bins once it ends


def stages(pyramids: list[PyramidPlan]) -> list[Stage]:
    """The stages of building ``pyramids`` together (module docstring); empty stages are left out."""
    beside = [p for p in pyramids if p.level1_reads_input and not p.needs_bins]
    beside_uris = {p.uri for p in beside}
    first = [Work(p, "shard", job) for p in pyramids if not p.level0_folded for job in p.levels[0].jobs]
    first += [Work(p, "shard", job) for p in beside for job in p.levels[1].jobs]
    out = [Stage("levels 0 and 1" if beside else "level 0", first, [p for p in pyramids if p.needs_bins])]
    out.append(Stage("level 1", [Work(p, "shard", job, True) for p in pyramids
                                 if len(p.levels) > 1 and p.uri not in beside_uris
                                 for job in p.levels[1].jobs]))
    out.append(Stage("histograms", [Work(p, "count", job, True) for p in pyramids if p.needs_count_pass
                                    for job in p.levels[0].jobs]))
    for level in range(2, max((len(p.levels) for p in pyramids), default=0)):
        out.append(Stage(f"level {level}", [Work(p, "shard", job) for p in pyramids if level < p.tail_start
                                            for job in p.levels[level].jobs]))
    out.append(Stage("last levels", [Work(p, "chain", chain) for p in pyramids for chain in p.tail]))
    return [stage for stage in out if stage.work or stage.bins_after]


def run_work(work: Work, bins: dict[str, list[Bins | None]],
             storage_options_for: uris.OptionsFor = uris.no_options) -> LevelSummary:
    """One piece of work, in this process (what the flow's tasks do around the same calls)."""
    given = bins.get(work.pyramid.uri) if work.with_bins else None
    if work.kind == "chain":
        assert isinstance(work.job, LevelChain)
        return build_level_chain(work.job, storage_options_for)
    assert isinstance(work.job, LevelJob)
    if work.kind == "count":
        return count_level_shard(work.job, given, storage_options_for)
    return build_level_shard(work.job, given, storage_options_for)


def build_pyramids(pyramids: list[PyramidPlan], provenance: dict[str, Any],
                   map_: Callable[..., Iterable[Any]] = map,
                   storage_options_for: uris.OptionsFor = uris.no_options) -> None:
    """Every pyramid without an orchestrator, in the flow's order.

    ``map_`` runs the work of each stage (``map``, or a thread pool's ``map``);
    the flow does the same with Prefect tasks, retries and cache.
    """
    for pyramid in pyramids:
        create_pyramid(pyramid, provenance, storage_options_for(pyramid.uri))
    results: dict[str, list[LevelSummary]] = {p.uri: [] for p in pyramids}
    bins: dict[str, list[Bins | None]] = {}
    for stage in stages(pyramids):
        done = list(map_(lambda work: run_work(work, bins, storage_options_for), stage.work))
        for work, result in zip(stage.work, done, strict=True):
            results[work.pyramid.uri].append(result)
        for pyramid in stage.bins_after:
            bins[pyramid.uri] = merge_moments(pyramid, results[pyramid.uri]).bins
    for pyramid in pyramids:
        bands = band_statistics(pyramid, merge_moments(pyramid, results[pyramid.uri]), results[pyramid.uri])
        commit_pyramid(pyramid, bands, storage_options_for(pyramid.uri))


def build_pyramid(pyramid: PyramidPlan, provenance: dict[str, Any], map_: Callable[..., Iterable[Any]] = map,
                  storage_options_for: uris.OptionsFor = uris.no_options) -> None:
    """One pyramid without an orchestrator (``build_pyramids`` of one)."""
    build_pyramids([pyramid], provenance, map_, storage_options_for)
