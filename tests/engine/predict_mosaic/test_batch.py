"""The batch size a plan picks by timing the model on this device."""

from __future__ import annotations

import time

import pytest
import torch
from predict_fixtures import SHIPPED_MODEL

from rasterflow.engine.predict_mosaic import batch
from rasterflow.engine.predict_mosaic.batch import candidate_sizes, fastest_batch
from rasterflow.engine.predict_mosaic.model import LoadedModel, load_model


def test_candidates_double_up_to_the_bound():
    assert candidate_sizes(1) == [1]
    assert candidate_sizes(16) == [1, 2, 4, 8, 16]
    assert candidate_sizes(12) == [1, 2, 4, 8, 12]


class CostModel(torch.nn.Module):
    """A stand-in whose forward pass costs a known time for a batch of n patches.

    Real models' timings swing with the machine's load; these make the choice
    itself testable: the rule is the same for any model.
    """

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds(x.shape[0]))
        return torch.zeros((x.shape[0], 2, *x.shape[2:]))


# Contrasts of 2x and more: a loaded machine oversleeps by milliseconds, never by that much.
@pytest.mark.parametrize("cost, expected", [
    (lambda n: 0.04, 16),  # a fixed cost per pass: the largest batch
    (lambda n: 0.02 * n * n, 1),  # memory-bound: each patch slower in a bigger batch
    (lambda n: 0.04 + 0.005 * n if n <= 4 else 0.5, 4),  # better up to 4, then far past the cache
])
def test_the_fastest_size_per_patch_wins(cost, expected):
    model = LoadedModel(module=CostModel(cost), device="cpu", format="pt2", source="cost")
    assert fastest_batch(model, 3, 8, 16, 2) == expected


def test_timed_once_per_loaded_model_and_shape():
    model = load_model(SHIPPED_MODEL, "shipped", "cpu")
    chosen = fastest_batch(model, 3, 64, 8, 2)
    assert chosen in candidate_sizes(8)
    started = time.perf_counter()
    assert fastest_batch(model, 3, 64, 8, 2) == chosen
    assert time.perf_counter() - started < 0.01  # remembered, not timed again
    assert (3, 64, 8) in batch._chosen[id(model)][1]


def test_a_gpu_keeps_the_asked_size():
    """No GPU here: a CPU module labelled cuda reaches the same branch, which never runs the model."""
    model = LoadedModel(module=CostModel(lambda n: 1.0), device="cuda:0", format="pt2", source="gpu")
    started = time.perf_counter()
    assert fastest_batch(model, 3, 8, 16, 2) == 16
    assert time.perf_counter() - started < 0.5
