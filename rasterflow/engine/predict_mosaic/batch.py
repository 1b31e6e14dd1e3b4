"""The batch size that runs fastest on this device, found by timing the model on the probe's patches.

On a CPU a batch of large patches is memory-bound: measured on the
benchmark's model (four 3x3 convolutions 64 wide, 256 px patches), a batch of
16 ran 1.4-2.0x slower per patch than patches one at a time, because each
layer's activations (16 x 64 x 256 x 256 floats, 270 MB) no longer fit any
cache. Which size wins depends on the model, the patch and the machine, so
the plan times it: ``max_batch_size`` is the upper bound, and sizes 1, 2, 4,
... up to it run on zeros of the patch shape (after one untimed pass each, so
kernels are chosen and memory allocated), until a size is clearly slower per
patch than the best so far (past the cache, bigger only gets slower) or the
timing budget is spent; of sizes within 3% per patch, the larger wins. The
choice is kept per loaded model, so a session times once.

On a GPU the batch stays ``max_batch_size``, as before: throughput grows
with the batch until memory runs out, and timing a GPU honestly needs
synchronisation and cuDNN autotuning warm-ups that a plan should not pay.
A model exported with a static batch size takes only that size (the caller
does not ask).
"""

from __future__ import annotations

import threading
import time
import weakref

import numpy as np

from .model import BatchRunner, LoadedModel

BUDGET_SECONDS = 10.0  # timing stops after this much, keeping the best size so far
WORSE = 1.15  # a size this much slower per patch than the best ends the search
TIE = 1.03  # a larger size within this of the best per patch is taken: fewer passes, same speed

_lock = threading.RLock()  # a weakref callback may fire while it is held
# id(model) -> (weak reference to it, {(channels, patch, max batch): chosen size})
_chosen: dict[int, tuple[weakref.ref, dict[tuple[int, int, int], int]]] = {}


def candidate_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... below ``max_batch``, then ``max_batch`` itself."""
    sizes = [1 << k for k in range(max_batch.bit_length()) if 1 << k < max_batch]
    return [*sizes, max_batch]


def fastest_batch(model: LoadedModel, in_channels: int, patch_size: int, max_batch: int,
                  n_labels: int) -> int:
    """The batch size (<= ``max_batch``) with the least time per patch on ``model``'s device."""
    if model.device != "cpu" or max_batch == 1:
        return max_batch
    key = (in_channels, patch_size, max_batch)
    with _lock:
        entry = _chosen.get(id(model))
        if entry is not None and entry[0]() is model and key in entry[1]:
            return entry[1][key]
    size = _time_sizes(model, in_channels, patch_size, max_batch, n_labels)
    with _lock:
        entry = _chosen.get(id(model))
        if entry is None or entry[0]() is not model:
            entry = _chosen[id(model)] = (weakref.ref(model, _forget(id(model))), {})
        entry[1][key] = size
    return size


def _forget(model_id: int):
    """Drops a model's choices when it is unloaded (its id may then be reused)."""
    def forget(_: weakref.ref) -> None:
        with _lock:
            _chosen.pop(model_id, None)
    return forget


def _time_sizes(model: LoadedModel, in_channels: int, patch_size: int, max_batch: int,
                n_labels: int) -> int:
    runner = BatchRunner(model, n_labels, activation=None)
    best, best_per_patch = 1, float("inf")
    spent = time.perf_counter()
    for size in candidate_sizes(max_batch):
        zeros = np.zeros((size, in_channels, patch_size, patch_size), np.float32)
        for _ in runner.run([zeros]):  # untimed: kernels chosen, memory allocated
            pass
        started = time.perf_counter()
        for _ in runner.run([zeros]):
            pass
        per_patch = (time.perf_counter() - started) / size
        if per_patch <= TIE * best_per_patch:
            best, best_per_patch = size, min(per_patch, best_per_patch)
        if per_patch > WORSE * best_per_patch or time.perf_counter() - spent > BUDGET_SECONDS:
            break
    return best
