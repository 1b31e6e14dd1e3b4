"""infer-block: a group of neighbouring blocks predicted side by side, each patch run once.

A task takes a group of blocks (``plan``, ``engine.groups``). Its blocks
share the patches straddling their borders as the one-task-per-block
checkerboard did, at two levels:

* inside the group, in memory: blocks are coloured like a checkerboard by
  their position in the store's block grid; a second-colour block starts once
  its first-colour neighbours in the group are done and takes the
  predictions they kept for it;
* across group edges, through scratch files: groups are coloured too; a block
  of a first-colour group saves what the blocks across its group's edges need
  (``<scratch>/<block>.npz``), and a second-colour group, which the flow
  starts after its neighbouring groups, takes them.

Which block takes what from whom follows from the plan alone, never from
timing, so a run is repeatable. Only patches at the corners of first-colour
blocks (or groups) run twice, and a prediction missing from the scratch is
simply run: the result never depends on the sharing.

Blocks run on the process's block threads, at most ``workers`` at once,
first-colour blocks of a row before the second-colour blocks of the row
above, so the predictions waiting in memory are those of about two rows of
blocks, never the group's. On a CPU the model's forward passes are
serialised by its lock (the model itself uses every core), so the other
threads overlap reading, merging and writing with it.
"""

from __future__ import annotations

import heapq
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from .. import uris
from ..groups import block_pool
from ..partitions import Window
from ..store import write_window
from .block import axis_tilings, checked_model, patches_of, predict_block
from .plan import InferBlockJob
from .scratch import Patch, load_shared, save_shared


class BlockSummary(BaseModel):
    """What an infer-block task reports (and caches): its group's blocks and patches."""

    model_config = ConfigDict(frozen=True)

    key: str
    blocks: int
    written: int  # blocks holding a valid pixel, written; the others read as nodata
    patches: int  # run by this group
    patches_taken: int  # merged from a neighbour's predictions (in memory or a scratch file)
    valid_pixels: int


@dataclass
class _Block:
    window: Window
    phase: int  # checkerboard colour of its position in the block grid
    priority: tuple[int, int, int]
    providers: list[int] = field(default_factory=list)  # blocks of the group it takes from
    consumers: list[int] = field(default_factory=list)  # blocks of the group taking from it
    outside: list[Window] = field(default_factory=list)  # neighbours in other groups


def layout(job: InferBlockJob) -> list[_Block]:
    """The group's blocks, who shares with whom inside it, and their neighbours outside it."""
    size = job.block
    windows = job.blocks
    at = {(w.row0 // size, w.col0 // size): k for k, w in enumerate(windows)}
    top, left = min(at)
    blocks = []
    for (r, c), k in at.items():
        phase = (r + c) % 2
        blocks.append(_Block(windows[k], phase, (r - top + phase, phase, c - left)))
    for (r, c), k in at.items():
        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if (rr, cc) in at:
                if blocks[k].phase == 1:
                    blocks[k].providers.append(at[rr, cc])
                    blocks[at[rr, cc]].consumers.append(k)
            elif 0 <= rr * size < job.height and 0 <= cc * size < job.width:
                blocks[k].outside.append(Window(row0=rr * size, row1=min((rr + 1) * size, job.height),
                                                col0=cc * size, col1=min((cc + 1) * size, job.width)))
    return blocks


def scratch_file(job: InferBlockJob, window: Window) -> str:
    """Where a block of a first-colour group leaves the predictions its neighbours across the edge need."""
    return uris.join(job.scratch_uri, f"{window.id}.npz")


class _Group:
    """One group's run: its blocks, what each needs and keeps, and the counts reported."""

    def __init__(self, job: InferBlockJob, storage_options_for: uris.OptionsFor):
        self.job, self.options_for = job, storage_options_for
        self.model = checked_model(job.spec, storage_options_for(job.spec.model_uri))
        self.blocks = layout(job)
        rows, cols = axis_tilings(job)
        self.needs = [patches_of(rows, cols, [b.window]) for b in self.blocks]
        self.across = [patches_of(rows, cols, b.outside) for b in self.blocks]
        self.kept: dict[int, dict[Patch, np.ndarray]] = {}  # provider -> predictions its consumers need
        self.waiting = set(range(len(self.blocks)))  # blocks not started yet
        self.counts = {"written": 0, "patches": 0, "patches_taken": 0, "valid_pixels": 0}

    def taken(self, k: int) -> dict[Patch, np.ndarray]:
        """What block ``k``'s providers kept for it; each forgets a prediction no consumer still needs."""
        known: dict[Patch, np.ndarray] = {}
        for p in self.blocks[k].providers:
            kept = self.kept.get(p, {})
            known.update((ij, kept[ij]) for ij in self.needs[k] & kept.keys())
            still = set().union(*(self.needs[c] for c in self.blocks[p].consumers if c in self.waiting))
            self.kept[p] = {ij: v for ij, v in kept.items() if ij in still}
        return known

    def run_block(self, k: int, known: dict[Patch, np.ndarray]) -> tuple[dict[str, int], dict[Patch, Any]]:
        job, block = self.job, self.blocks[k]
        if job.phase == 1 and block.outside:  # the first-colour groups across the edges are done
            files = [scratch_file(job, w) for w in block.outside]
            known = load_shared(files, self.options_for(files[0])) | known
        wanted = self.across[k] | set().union(*(self.needs[c] for c in block.consumers))
        result, stats, ran = predict_block(job, block.window, self.model, self.options_for(job.input_uri),
                                           known, wanted)
        if job.phase == 0 and (across := {ij: v for ij, v in ran.items() if ij in self.across[k]}):
            uri = scratch_file(job, block.window)
            save_shared(uri, across, self.options_for(uri))
        if result is not None:
            write_window(job.output_uri, job.output_time, block.window, result,
                         self.options_for(job.output_uri))
        stats["written"] = int(result is not None)
        return stats, ran

    def run(self, workers: int) -> None:
        """Every block, providers before their consumers, at most ``workers`` at once."""
        blocks = self.blocks
        missing = [len(b.providers) for b in blocks]
        ready = [(b.priority, k) for k, b in enumerate(blocks) if not missing[k]]
        heapq.heapify(ready)
        running: dict[Future, int] = {}
        failure: BaseException | None = None
        pool = block_pool(workers)
        while ready or running:
            while ready and len(running) < workers and failure is None:
                _, k = heapq.heappop(ready)
                self.waiting.discard(k)
                running[pool.submit(self.run_block, k, self.taken(k))] = k
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                k = running.pop(future)
                if future.exception() is not None:
                    failure = failure or future.exception()
                    continue
                stats, ran = future.result()
                for name in self.counts:
                    self.counts[name] += stats[name]
                wanted = set().union(*(self.needs[c] for c in blocks[k].consumers))
                self.kept[k] = {ij: v for ij, v in ran.items() if ij in wanted}
                for c in blocks[k].consumers:
                    missing[c] -= 1
                    if not missing[c]:
                        heapq.heappush(ready, (blocks[c].priority, c))
        if failure is not None:
            raise failure


def infer_group(job: InferBlockJob, storage_options_for: uris.OptionsFor = uris.no_options,
                workers: int = 1) -> BlockSummary:
    """Predict the group's blocks on ``workers`` threads and write each block's shards whole."""
    group = _Group(job, storage_options_for)
    group.run(workers)
    return BlockSummary(key=job.key, blocks=len(group.blocks), **group.counts)
